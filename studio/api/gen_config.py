"""The /api/models/{id}/config routes: a model's stored generation settings, their schema, reset and history."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.params import Limit, Offset
from studio.context import AppContext
from studio.services.gen_config import ConfigHistory, ConfigView

ERRORS = error_responses({404: "not_found: unknown model"})


def build_gen_config_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/models/{model_id}/config", tags=["generation settings"])
    service = ctx.gen_config

    @router.get("", response_model=ConfigView, responses=ERRORS)
    def get_config(model_id: str) -> ConfigView:
        """The model's stored generation settings, registry.yaml's defaults, and which settings differ from them."""
        return service.get(model_id)

    @router.put("", response_model=ConfigView,
                responses=error_responses({404: "not_found: unknown model", 422: (
                    "invalid_settings: `errors` names each bad field, nothing is stored; invalid_parameter, "
                    "invalid_body, invalid_json")}))
    def put_config(model_id: str, request: Request,
                   values: dict[str, Any] = Body(..., description=(
                       "settings to change, by name (the others keep their values); types, bounds and options: "
                       "GET /api/models/{model_id}/config/schema"), examples=[{"top_k": 100, "temperature": 0.9}])
                   ) -> ConfigView:
        """Validate and store settings; the change is recorded in the history with who made it."""
        return service.update(model_id, values, by=current_user(request))

    @router.get("/schema", responses=ERRORS)
    def get_schema(model_id: str) -> dict[str, Any]:
        """JSON Schema of the model's settings: types, bounds, options, descriptions and this model's defaults."""
        return service.schema(model_id)

    @router.post("/reset", response_model=ConfigView, responses=ERRORS)
    def reset_config(model_id: str, request: Request) -> ConfigView:
        """Put every setting back to registry.yaml's default (recorded in the history)."""
        return service.reset(model_id, by=current_user(request))

    @router.get("/history", response_model=ConfigHistory, responses=ERRORS)
    def get_history(model_id: str, limit: Limit = 50, offset: Offset = 0
                    ) -> ConfigHistory:
        """Changes to the model's settings, newest first: who, when, old and new values."""
        return service.history(model_id, limit=limit, offset=offset)

    return router
