"""Per-model generation settings stored in the database: typed by the model's settings class, seeded from
registry.yaml, changed with an audit trail (who, when, old and new values), reset to defaults, and used by every
generation as its defaults."""
from __future__ import annotations

import logging
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field, ValidationError

from studio.db.engine import session_scope
from studio.db.gen_config import count_changes, get_config, list_changes, save_config, seed_config
from studio.db.models import UTCTimestamp
from studio.errors import InvalidValues
from studio.gen_settings import MusicgenSettings, field_errors
from studio.registry import ModelSpec, Registry
from studio.users import LOCAL_USER, SYSTEM_USER

log = logging.getLogger(__name__)



class ConfigView(BaseModel):
    model_id: str
    values: dict[str, Any] = Field(description="the stored settings, used by every generation with this model")
    defaults: dict[str, Any] = Field(description="the defaults from registry.yaml")
    changed: list[str] = Field(description="the settings whose value differs from the default")
    updated_at: UTCTimestamp | None
    updated_by: str | None
    ignored: dict[str, str] = Field(default_factory=dict, description=(
        "stored values no longer valid (e.g. a limit lowered in registry.yaml): the default is used instead"))


class ConfigChange(BaseModel):
    id: int
    model_id: str
    action: Literal["seed", "update", "reset"] = Field(description="seed (from registry.yaml), update or reset")
    changed_by: str = Field(description="the authenticated user, 'local' without auth, 'system' for seeding")
    changed_at: UTCTimestamp
    old_values: dict[str, Any] = Field(description="the changed settings before")
    new_values: dict[str, Any] = Field(description="the changed settings after")


class ConfigHistory(BaseModel):
    model_id: str
    total: int
    changes: list[ConfigChange] = Field(description="newest first")


def _diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    return {k: old.get(k) for k in keys}, {k: new.get(k) for k in keys}


class GenerationConfigService:
    def __init__(self, engine, registry: Registry):
        self.engine, self.registry = engine, registry

    # ---- reading ----------------------------------------------------------------------------------------------
    def schema(self, model_id: str) -> dict[str, Any]:
        """JSON Schema of the model's settings: types, bounds, options, descriptions, and this model's defaults."""
        spec = self.registry.get(model_id)
        schema = spec.settings_class.model_json_schema()
        for name, prop in schema["properties"].items():
            prop["default"] = getattr(spec.generation, name)  # registry.yaml's, not the class's generic default
        schema["title"] = f"{spec.display_name} generation settings"
        return schema

    def _effective(self, spec: ModelSpec, stored: dict[str, Any] | None) -> tuple[MusicgenSettings, dict[str, str]]:
        """Stored values over the defaults. A stored value that is no longer valid (a bound lowered in
        registry.yaml, a setting renamed) falls back to its default and is reported, rather than breaking."""
        defaults, stored = spec.generation.model_dump(), stored or {}
        ignored = {k: "no longer a setting of this model" for k in stored if k not in defaults}
        values = {**defaults, **{k: v for k, v in stored.items() if k in defaults}}
        try:
            settings = spec.settings_class.model_validate(values)
        except ValidationError as exc:
            invalid = field_errors(exc)
            ignored.update(invalid)
            kept = {k: v for k, v in values.items() if k not in invalid}
            settings = spec.settings_class.model_validate({**defaults, **kept})
        if ignored:
            log.warning("stored settings of %s ignored (defaults used): %s", spec.id, ignored)
        return settings, ignored

    def settings_for(self, spec: ModelSpec) -> MusicgenSettings:
        """The settings a generation with this model starts from."""
        with session_scope(self.engine) as session:
            row = get_config(session, spec.id)
        return self._effective(spec, row.values if row else None)[0]

    def get(self, model_id: str) -> ConfigView:
        spec = self.registry.get(model_id)
        with session_scope(self.engine) as session:
            row = get_config(session, spec.id)
        settings, ignored = self._effective(spec, row.values if row else None)
        values, defaults = settings.model_dump(), spec.generation.model_dump()
        return ConfigView(model_id=spec.id, values=values, defaults=defaults,
                          changed=[k for k in values if values[k] != defaults[k]],
                          updated_at=row.updated_at if row else None, updated_by=row.updated_by if row else None,
                          ignored=ignored)

    def history(self, model_id: str, limit: int = 50, offset: int = 0) -> ConfigHistory:
        spec = self.registry.get(model_id)
        with session_scope(self.engine) as session:
            rows = list_changes(session, spec.id, limit=max(1, min(limit, 500)), offset=max(0, offset))
            total = count_changes(session, spec.id)
        return ConfigHistory(model_id=spec.id, total=total, changes=[
            ConfigChange(**r.model_dump()) for r in rows])  # times come back in UTC (UTCDateTime)

    # ---- changing ---------------------------------------------------------------------------------------------
    def seed(self) -> list[str]:
        """Store registry.yaml's defaults for every model that has no stored settings yet (first start, or a
        model added to the registry). Returns the ids seeded."""
        seeded = []
        with session_scope(self.engine) as session:
            for spec in self.registry.models:
                if get_config(session, spec.id) is None and seed_config(session, spec.id,
                                                                        spec.generation.model_dump(), SYSTEM_USER):
                    seeded.append(spec.id)
        return seeded

    def validate_changes(self, model_id: str, changes: Any, current: dict[str, Any] | None = None
                         ) -> MusicgenSettings:
        """The model's settings (current: as just read) with `changes` applied, or InvalidValues naming every bad
        field."""
        spec = self.registry.get(model_id)
        if not isinstance(changes, dict):
            raise InvalidValues("The settings must be a JSON object of setting names and values.",
                                code="invalid_settings", errors=[{"field": "(body)", "message": "expected an object"}])
        if current is None:
            current = self.settings_for(spec).model_dump()
        try:
            return spec.settings_class.model_validate({**current, **changes})
        except ValidationError as exc:
            problems = field_errors(exc)
            text = "; ".join(f"{k}: {v}" for k, v in problems.items())
            raise InvalidValues(f"Not saved: {text}.", code="invalid_settings", model_id=spec.id,
                                errors=[{"field": k, "message": v} for k, v in problems.items()]) from None

    def update(self, model_id: str, changes: Any, by: str = LOCAL_USER) -> ConfigView:
        """Change some settings (the others keep their values). Nothing is stored unless every value is valid."""
        spec = self.registry.get(model_id)
        self._store(spec, lambda current: self.validate_changes(spec.id, changes, current).model_dump(), "update", by)
        return self.get(spec.id)

    def reset(self, model_id: str, by: str = LOCAL_USER) -> ConfigView:
        """Back to registry.yaml's defaults; recorded in the history."""
        spec = self.registry.get(model_id)
        self._store(spec, lambda _current: spec.generation.model_dump(), "reset", by, always=True)
        return self.get(spec.id)

    def _store(self, spec: ModelSpec, make_new: Callable[[dict[str, Any]], dict[str, Any]], action: str, by: str,
               always: bool = False) -> None:
        """One read-modify-write under the row's lock: the values read, make_new(them), the change recorded with
        them; two saves at once (threads, or studios sharing the database) are applied one after the other."""
        with session_scope(self.engine) as session:
            row = get_config(session, spec.id, lock=True)
            old_all = self._effective(spec, row.values if row else None)[0].model_dump()
            new = make_new(old_all)
            old, changed = _diff(old_all, new)
            if changed or always:  # saving the same values again is not a change
                save_config(session, spec.id, new, action=action, by=by or LOCAL_USER, old=old, new=changed)

    # ---- generation -------------------------------------------------------------------------------------------
    def resolve(self, spec: ModelSpec, overrides: Any) -> MusicgenSettings:
        """The stored settings with a request's overrides, validated against the same schema, refused like a
        PUT of the same values (422 invalid_settings naming each bad field, unknown ones included)."""
        base = self.settings_for(spec)
        if overrides is None:
            return base
        if not isinstance(overrides, dict):
            raise InvalidValues("settings must be an object of setting names and values.", code="invalid_settings",
                                errors=[{"field": "settings", "message": "expected an object"}])
        try:
            return spec.settings_class.model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            problems = field_errors(exc)
            text = "; ".join(f"{k}: {v}" for k, v in problems.items())
            raise InvalidValues(f"Invalid settings: {text}.", code="invalid_settings", model_id=spec.id,
                                errors=[{"field": k, "message": v} for k, v in problems.items()],
                                allowed=list(spec.settings_class.model_fields)) from None
