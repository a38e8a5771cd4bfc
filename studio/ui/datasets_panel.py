"""The Training tab's datasets panel: create a dataset from a folder or an archive, read its report, listen to its
clips, edit captions in bulk, exclude clips. (Lane `datasets` builds it.)"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext


@dataclass
class DatasetsPanel:
    root: gr.Column


def build_datasets_panel(ctx: AppContext) -> DatasetsPanel:
    with gr.Column() as root:
        gr.Markdown("### Datasets")
    return DatasetsPanel(root)


def wire_datasets_panel(ctx: AppContext, panel: DatasetsPanel) -> None:
    return None
