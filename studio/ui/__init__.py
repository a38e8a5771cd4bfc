"""Gradio Blocks UI: build_ui(ctx) -> gr.Blocks. Handlers call services only."""
