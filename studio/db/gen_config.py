"""Session-first crud for stored generation settings and their audit trail."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from studio.db.engine import for_update, insert_if_absent
from studio.db.models import GenerationConfig, GenerationConfigChange, utcnow


def get_config(session: Session, model_id: str, *, lock: bool = False) -> GenerationConfig | None:
    """lock: the row stays locked until the commit (a read-modify-write; db.engine.for_update: first in the
    session), so two saves at once (threads or studios) never lose one's change."""
    if not lock:
        return session.get(GenerationConfig, model_id)
    return session.exec(for_update(session, select(GenerationConfig).where(GenerationConfig.model_id == model_id))
                        ).first()


def seed_config(session: Session, model_id: str, values: dict[str, Any], by: str) -> bool:
    """Store a model's first values and their 'seed' record, unless it has values already (another studio sharing
    the database may seed at the same moment: one of them does); whether this one did."""
    now = utcnow()
    if not insert_if_absent(session, GenerationConfig, dict(model_id=model_id, values=dict(values), updated_at=now,
                                                            updated_by=by), ["model_id"]):
        session.rollback()
        return False
    session.add(GenerationConfigChange(model_id=model_id, action="seed", changed_by=by, changed_at=now,
                                       old_values={}, new_values=dict(values)))
    session.commit()
    return True


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
