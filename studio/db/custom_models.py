"""Session-first crud for custom models (the entries added in the studio beside registry.yaml)."""
from __future__ import annotations

from sqlmodel import Session, select

from studio.db.models import CustomModel


def add_custom_model(session: Session, model_id: str, spec: dict, added_by: str,
                     provenance: dict | None = None) -> CustomModel:
    row = CustomModel(id=model_id, spec=spec, added_by=added_by, provenance=provenance)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def list_custom_models(session: Session) -> list[CustomModel]:
    return list(session.exec(select(CustomModel).order_by(CustomModel.created_at, CustomModel.id)))


def get_custom_model(session: Session, model_id: str) -> CustomModel | None:
    return session.get(CustomModel, model_id)


def delete_custom_model(session: Session, model_id: str) -> bool:
    row = session.get(CustomModel, model_id)
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True
