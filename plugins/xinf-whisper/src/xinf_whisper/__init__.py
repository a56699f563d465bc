"""Speech to text for xinf: Whisper through faster-whisper."""
