"""Session-first crud for accounts, login sessions and API tokens (the service owns the rules)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, select

from studio.db.engine import for_update
from studio.db.models import Account, ApiToken, LoginSession


def count_accounts(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Account)).one()


def enabled_admins(session: Session, *, lock: bool = False) -> list[Account]:
    """The enabled admins; lock: hold their rows until commit, so two requests (or studios) demoting two admins at
    once cannot both see "another admin is left"."""
    query = select(Account).where(Account.role == "admin", Account.disabled == False).order_by(Account.id)  # noqa: E712
    return list(session.exec(for_update(session, query) if lock else query))


def get_account(session: Session, name: str, lock: bool = False) -> Account | None:
    """lock: hold the row until commit (engine.for_update: PostgreSQL's row lock, SQLite's write lock)."""
    query = select(Account).where(Account.name == name)
    return session.exec(for_update(session, query) if lock else query).first()


def name_taken(session: Session, name: str) -> bool:
    """Whether an account has this name in any case ('Mia' and 'mia' would read as one person in the records)."""
    return session.exec(select(Account.id).where(func.lower(Account.name) == name.lower())).first() is not None


def list_accounts(session: Session) -> list[Account]:
    return list(session.exec(select(Account).order_by(Account.name)))


def session_with_account(session: Session, token_hash: str) -> tuple[LoginSession, Account] | None:
    row = session.exec(select(LoginSession, Account).join(Account, Account.id == LoginSession.account_id)
                       .where(LoginSession.token_hash == token_hash)).first()
    return (row[0], row[1]) if row else None


def token_with_account(session: Session, token_hash: str) -> tuple[ApiToken, Account] | None:
    row = session.exec(select(ApiToken, Account).join(Account, Account.id == ApiToken.account_id)
                       .where(ApiToken.token_hash == token_hash)).first()
    return (row[0], row[1]) if row else None


def delete_sessions(session: Session, *, account_id: int | None = None, token_hash: str | None = None,
                    expired_before: datetime | None = None, except_hash: str | None = None) -> int:
    """Delete login sessions matching every given condition (except_hash: all but that one); how many."""
    query = select(LoginSession)
    if account_id is not None:
        query = query.where(LoginSession.account_id == account_id)
    if token_hash is not None:
        query = query.where(LoginSession.token_hash == token_hash)
    if except_hash is not None:
        query = query.where(LoginSession.token_hash != except_hash)
    if expired_before is not None:
        query = query.where(LoginSession.expires_at <= expired_before)
    rows = list(session.exec(query))
    for row in rows:
        session.delete(row)
    return len(rows)


def trim_sessions(session: Session, account_id: int, keep: int) -> int:
    """Delete the account's oldest login sessions beyond the newest `keep`; how many."""
    old = list(session.exec(select(LoginSession).where(LoginSession.account_id == account_id)
                            .order_by(LoginSession.created_at.desc(), LoginSession.id.desc()).offset(keep)))
    for row in old:
        session.delete(row)
    return len(old)


def touch(session: Session, model, row_id: int, column: str, moment: datetime) -> None:
    """Set a last-seen / last-used time without loading the row (one UPDATE, no race with other writers)."""
    session.exec(update(model).where(model.id == row_id).values({column: moment}))


def count_live_tokens(session: Session, account_id: int, now: datetime) -> int:
    """The account's tokens neither revoked nor expired."""
    query = select(func.count()).select_from(ApiToken).where(
        ApiToken.account_id == account_id, ApiToken.revoked_at == None,  # noqa: E711 - SQL
        (ApiToken.expires_at == None) | (ApiToken.expires_at > now))  # noqa: E711 - SQL
    return session.exec(query).one()


def list_tokens(session: Session, account_id: int | None = None) -> list[tuple[ApiToken, Account]]:
    query = select(ApiToken, Account).join(Account, Account.id == ApiToken.account_id)
    if account_id is not None:
        query = query.where(ApiToken.account_id == account_id)
    return [(t, a) for t, a in session.exec(query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc()))]
