"""Text to image for xinf: diffusers pipelines."""
