"""Everything that touches torch, transformers and the hub. Never imports the database, gradio or fastapi."""
