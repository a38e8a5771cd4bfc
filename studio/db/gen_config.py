"""Session-first crud for stored generation settings and their audit trail."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from studio.db.models import GenerationConfig, GenerationConfigChange, utcnow


def get_config(session: Session, model_id: str) -> GenerationConfig | None:
    return session.get(GenerationConfig, model_id)


def save_config(session: Session, model_id: str, values: dict[str, Any], *, action: str, by: str,
                old: dict[str, Any], new: dict[str, Any]) -> GenerationConfig:
    """Store a model's values and one history record in the same transaction: both or neither."""
    row = session.get(GenerationConfig, model_id) or GenerationConfig(model_id=model_id)
    row.values, row.updated_at, row.updated_by = dict(values), utcnow(), by
    session.add(row)
    session.add(GenerationConfigChange(model_id=model_id, action=action, changed_by=by, changed_at=row.updated_at,
                                       old_values=old, new_values=new))
    session.commit()
    session.refresh(row)
    return row


def list_changes(session: Session, model_id: str, limit: int = 50, offset: int = 0) -> list[GenerationConfigChange]:
    stmt = (select(GenerationConfigChange).where(GenerationConfigChange.model_id == model_id)
            .order_by(GenerationConfigChange.changed_at.desc(), GenerationConfigChange.id.desc())
            .offset(offset).limit(limit))
    return list(session.exec(stmt))


def count_changes(session: Session, model_id: str) -> int:
    stmt = select(func.count()).select_from(GenerationConfigChange).where(GenerationConfigChange.model_id == model_id)
    return session.exec(stmt).one()
