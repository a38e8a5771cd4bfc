"""SQLModel tables, the engine, and session-first crud functions."""
