"""Text2Song Studio: a local studio for text-to-music with MusicGen."""
