"""Use cases: typed requests in, typed results out. Raise studio.errors; never import gradio or fastapi."""
