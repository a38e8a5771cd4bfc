"""/api/datasets: create (folder or upload), list, show with report, clips, edit captions, delete. (Lane
`datasets` fills it.)"""
from __future__ import annotations

from fastapi import APIRouter

from studio.context import AppContext


def build_datasets_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["datasets"])
    return router
