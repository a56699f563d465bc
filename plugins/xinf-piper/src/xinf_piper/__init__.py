"""Text to speech for xinf: Piper voices."""
