"""The Training tab: datasets (studio/ui/datasets_panel.py), then runs: the configuration form built from the
schema, the runs list, a run's live loss chart, stop and resume, the audition of every checkpoint against the
starting point, and registration. (Lane `ui` builds it.)"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.ui.datasets_panel import DatasetsPanel, build_datasets_panel, wire_datasets_panel


@dataclass
class TrainingTab:
    datasets: DatasetsPanel


def build_training_tab(ctx: AppContext) -> TrainingTab:
    datasets = build_datasets_panel(ctx)
    return TrainingTab(datasets)


def wire_training_tab(ctx: AppContext, tab: TrainingTab, tab_item: gr.Tab) -> None:
    wire_datasets_panel(ctx, tab.datasets)
