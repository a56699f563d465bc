"""xinf-ngram: a word n-gram language model served as an xinf engine (the plugin docs/plugins.md builds)."""
