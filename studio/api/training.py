"""/api/training: the configuration schema, and runs: create, list, show, events (SSE), stop, resume, register a
checkpoint. (Lane `runs` fills it.)"""
from __future__ import annotations

from fastapi import APIRouter

from studio.context import AppContext


def build_training_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["training"])
    return router
