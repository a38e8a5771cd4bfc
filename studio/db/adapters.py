"""Session-first crud for adapters and their change log."""
from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import Session, select

from studio.db.models import Adapter, AdapterChange, Job, utcnow


def add_adapter(session: Session, adapter: Adapter) -> Adapter:
    session.add(adapter)
    session.commit()
    session.refresh(adapter)
    return adapter


def register_adapter(session: Session, adapter: Adapter, by: str, details: dict) -> Adapter:
    """Record a new adapter version and its 'registered' change together (one commit)."""
    session.add(adapter)
    session.flush()  # its id, for the change
    add_change(session, adapter.id, "registered", by, details)
    session.commit()
    session.refresh(adapter)
    return adapter


def add_change(session: Session, adapter_id: int, action: str, by: str, details: dict | None = None) -> None:
    """One change of an adapter version (who, what: old -> new); committed with the change itself."""
    session.add(AdapterChange(adapter_id=adapter_id, action=action, details=details or {}, changed_by=by))


def changes_of(session: Session, adapter_id: int) -> list[AdapterChange]:
    """An adapter version's changes, newest first."""
    stmt = (select(AdapterChange).where(AdapterChange.adapter_id == adapter_id)
            .order_by(AdapterChange.changed_at.desc(), AdapterChange.id.desc()))
    return list(session.exec(stmt))


def get_adapter(session: Session, adapter_id: int) -> Adapter | None:
    return session.get(Adapter, adapter_id)


def list_adapters(session: Session, *, include_deleted: bool = False, deleted_only: bool = False,
                  active: bool | None = None, base_model: str | None = None, name: str | None = None) -> list[Adapter]:
    stmt = select(Adapter)
    if deleted_only:
        stmt = stmt.where(Adapter.deleted_at.is_not(None))
    elif not include_deleted:
        stmt = stmt.where(Adapter.deleted_at.is_(None))
    if active is not None:
        stmt = stmt.where(Adapter.active == active)
    if base_model is not None:
        stmt = stmt.where(Adapter.base_model == base_model)
    if name is not None:
        stmt = stmt.where(Adapter.name == name)
    return list(session.exec(stmt.order_by(Adapter.name, Adapter.created_at, Adapter.version)))


def versions_of(session: Session, name: str) -> list[int]:
    """Every version of `name` ever registered, deleted ones included (a version number is never reused)."""
    return list(session.exec(select(Adapter.version).where(Adapter.name == name)))


def name_in_use(session: Session, name: str) -> bool:
    """Any version of `name`, deleted ones included, holds the name."""
    return session.exec(select(func.count()).select_from(Adapter).where(Adapter.name == name)).one() > 0


def rename_all(session: Session, old: str, new: str) -> list[int]:
    """Move every version of `old` (deleted ones too) to `new`, keeping their numbers; not committed. Their ids."""
    ids = list(session.exec(select(Adapter.id).where(Adapter.name == old)))
    session.exec(update(Adapter).where(Adapter.name == old).values(name=new, updated_at=utcnow()))
    return ids


def find_identical(session: Session, content_hash: str) -> Adapter | None:
    """The oldest live adapter with this content, if any."""
    stmt = (select(Adapter).where(Adapter.content_hash == content_hash, Adapter.deleted_at.is_(None))
            .order_by(Adapter.created_at))
    return session.exec(stmt).first()


def next_version(session: Session, name: str) -> int:
    latest = session.exec(select(func.max(Adapter.version)).where(Adapter.name == name)).one()
    return (latest or 0) + 1


def save_adapter(session: Session, adapter: Adapter) -> Adapter:
    adapter.updated_at = utcnow()
    session.add(adapter)
    session.commit()
    session.refresh(adapter)
    return adapter


def record_use(session: Session, adapter_id: int) -> None:
    """Count one more generation (committed with the job that used it)."""
    # in the database (not read-modify-write): jobs finishing at once, in any studio, each count
    session.execute(update(Adapter).where(Adapter.id == adapter_id).values(usage_count=Adapter.usage_count + 1))


def job_count(session: Session, adapter_id: int) -> int:
    return session.exec(select(func.count()).select_from(Job).where(Job.adapter_id == adapter_id)).one()
