"""Accounts, login sessions and API tokens: who may use the studio and with which role.

Passwords are hashed with argon2id (argon2-cffi, its recommended parameters); login-session and API-token secrets
are random 256-bit values, so a plain sha256 of them is what is stored (a fast hash is safe for secrets that cannot be
guessed, and lets every request be checked in one indexed lookup). Everything lives in the database, so several
studios on one database share their logins, a restart keeps them, and logging out (or disabling an account) ends them
everywhere at the next request. The account is read at every request: a role change applies at once.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from studio.db import accounts as crud
from studio.db.engine import session_scope
from studio.db.models import Account, ApiToken, LoginSession, UTCTimestamp, utcnow
from studio.errors import Conflict, Forbidden, InvalidValues, NotFound
from studio.users import LOCAL_USER, ROLES, SYSTEM_USER, Actor, Role

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
RESERVED_NAMES = {LOCAL_USER, SYSTEM_USER}  # records already use them for "no login" and "the studio itself"
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # hashing cost stays bounded whatever a request sends
HASHING_AT_ONCE = 2  # password checks running at once
TOKEN_PREFIX = "t2s_"  # recognisable in a leaked file or a secret scanner
TOUCH_EVERY = timedelta(minutes=1)  # last_seen / last_used written at most this often (not one write per request)
MAX_SESSIONS = 100  # login sessions per account: a script logging in at every run pushes out its oldest ones
MAX_TOKENS = 100  # live tokens per account: enough for every script, bounded whatever a client sends
VERIFIED_CACHE = 1000  # recent good logins remembered, so HTTP Basic on every request is not an argon2 hash each


class AccountInfo(BaseModel):
    name: str
    role: Role
    disabled: bool
    created_at: UTCTimestamp
    created_by: str


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # like every request body: 7 is not a name

    name: str = Field(min_length=1, max_length=64, description="letters, digits and . _ @ - (not 'local' or 'system')")
    password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    role: Role = "member"


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # like every request body: 7 is not a name

    role: Role | None = None
    disabled: bool | None = Field(None, description="true: the account can no longer log in; its sessions and "
                                                    "tokens stop at once (its records keep its name)")
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD,
                                 description="a new password set by an admin; the account's sessions end")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # like every request body: 7 is not a name

    current_password: str = Field(max_length=MAX_PASSWORD)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # like every request body: 7 is not a name

    name: str = Field(min_length=1, max_length=100, description="what the token is for, e.g. 'nightly renders'")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="none: until revoked")


class TokenInfo(BaseModel):
    id: int
    name: str
    owner: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart (never the whole token)")
    created_at: UTCTimestamp
    last_used_at: UTCTimestamp | None
    expires_at: UTCTimestamp | None
    revoked_at: UTCTimestamp | None
    state: Literal["active", "expired", "revoked"]


class NewToken(BaseModel):
    token: str = Field(description="the secret: shown this once, never again (send it as `Authorization: Bearer`)")
    info: TokenInfo


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(account: Account) -> AccountInfo:
    return AccountInfo(name=account.name, role=account.role, disabled=account.disabled,
                       created_at=account.created_at, created_by=account.created_by)


def _token_info(token: ApiToken, owner: Account, now: datetime) -> TokenInfo:
    state = "revoked" if token.revoked_at else "expired" if token.expires_at and token.expires_at <= now else "active"
    return TokenInfo(id=token.id, name=token.name, owner=owner.name, prefix=token.prefix,
                     created_at=token.created_at, last_used_at=token.last_used_at, expires_at=token.expires_at,
                     revoked_at=token.revoked_at, state=state)


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise InvalidValues(f"{name[:70]!r} is not a valid user name: 1-64 letters, digits and . _ @ -, starting "
                            "with a letter or digit.", code="invalid_user_name")
    if name.lower() in RESERVED_NAMES:
        raise InvalidValues(f"{name!r} is reserved (records use it for the studio itself or a studio without "
                            "login): choose another name.", code="invalid_user_name")
    return name


def check_password(password: str, name: str = "") -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidValues(f"The password is too short: at least {MIN_PASSWORD} characters.",
                            code="weak_password")
    if len(password) > MAX_PASSWORD:
        raise InvalidValues(f"The password is too long: at most {MAX_PASSWORD} characters.", code="weak_password")
    if name and password.strip().lower() == name.lower():
        raise InvalidValues("The password must not be the user name.", code="weak_password")


def has_accounts(engine) -> bool:
    """Whether the database holds any account (app.py asks before the heavy start: a Space's first-admin hint)."""
    with session_scope(engine) as session:
        return crud.count_accounts(session) > 0


class AccountService:
    """The one owner of accounts, login sessions and API tokens."""

    def __init__(self, engine, session_hours: float, login_required: bool,
                 hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self.session_lifetime = timedelta(hours=session_hours)
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106's recommended second choice
        self._dummy_hash: str | None = None  # made at the first unknown name: unknown names cost a verify too
        # HTTP Basic sends the password with every request; an argon2 verify costs tens of ms and 64 MiB each.
        # A keyed digest of (name, password) -> the hash it was verified against: a changed password (a new hash)
        # or a disabled account is seen at the next request, as the account row is read every time.
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._verified_key = secrets.token_bytes(32)  # per process: the digests mean nothing outside it
        self._verified_lock = threading.Lock()
        # at most this many password checks at once (argon2id: ~64 MiB each): a flood of logins waits its turn
        # instead of exhausting the memory
        self._hashing = threading.BoundedSemaphore(HASHING_AT_ONCE)
        with session_scope(engine) as session:
            # Once a studio has accounts it keeps asking for a login, even started without --auth: forgetting an
            # environment variable at a restart must not open a team's studio to the network.
            self.required = login_required or crud.count_accounts(session) > 0

    # ---- start-up -------------------------------------------------------------------------------------------
    def bootstrap(self, auth: tuple[str, str] | None) -> None:
        """--auth USER:PASS (the one-user shortcut, and the way back in after a lost password): USER is an enabled
        admin with that password, created if new."""
        if auth is None:
            return
        name, password = check_name(auth[0]), auth[1]
        with session_scope(self.engine) as session:
            account = crud.get_account(session, name)
            if account is None:
                account = Account(name=name, password_hash=self.hasher.hash(password), role="admin",
                                  created_by=SYSTEM_USER)
            elif account.role != "admin" or account.disabled or not self._matches(account, password):
                account.role, account.disabled = "admin", False
                account.password_hash, account.updated_at = self.hasher.hash(password), utcnow()
            session.add(account)
            session.commit()
        self.required = True

    def check_on(self) -> None:
        """Accounts, passwords and tokens exist only in a studio that asks for a login."""
        if not self.required:
            raise Conflict("Accounts are off: this studio has no login (everyone here is its one local admin). "
                           "Start it with STUDIO_AUTH=USER:PASS (or --auth-file PATH) to create the first admin "
                           "and turn on accounts, roles and API tokens.", code="accounts_off")

    def has_accounts(self) -> bool:
        return has_accounts(self.engine)

    # ---- logging in -----------------------------------------------------------------------------------------
    def _matches(self, account: Account, password: str) -> bool:
        try:
            with self._hashing:
                return self.hasher.verify(account.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def authenticate(self, name: str, password: str) -> Actor | None:
        """The account's Actor when the name and password are right and it is enabled, else None (the same time
        is spent whether or not the name exists)."""
        if len(password) > MAX_PASSWORD or len(name) > 200:
            return None
        name = name.strip()
        key = hmac.new(self._verified_key, f"{name}\0{password}".encode("utf-8", "surrogatepass"),
                       hashlib.sha256).digest()
        with session_scope(self.engine) as session:
            account = crud.get_account(session, name)
            if account is None:
                self._dummy_hash = self._dummy_hash or self.hasher.hash(secrets.token_urlsafe(16))
                try:
                    with self._hashing:
                        self.hasher.verify(self._dummy_hash, password)
                except VerificationError:
                    pass
                return None
            with self._verified_lock:
                known = self._verified.get(key) == account.password_hash
            if not known and not self._matches(account, password):
                return None
            if account.disabled:
                return None
            if not known and self.hasher.check_needs_rehash(account.password_hash):  # parameters raised since
                account.password_hash = self.hasher.hash(password)
                session.add(account)
                session.commit()
            with self._verified_lock:
                self._verified[key] = account.password_hash
                self._verified.move_to_end(key)
                while len(self._verified) > VERIFIED_CACHE:
                    self._verified.popitem(last=False)
            return Actor(account.name, account.role)

    def open_session(self, actor: Actor) -> str:
        """A new login session for an authenticated actor: the cookie's value (stored only as its hash)."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        with session_scope(self.engine) as session:
            account = crud.get_account(session, actor.name)
            if account is None:
                raise NotFound(f"There is no user {actor.name!r}.", code="user_not_found")
            crud.delete_sessions(session, expired_before=now)  # housekeeping: expired logins are gone for good
            session.add(LoginSession(account_id=account.id, token_hash=_digest(secret), created_at=now,
                                     last_seen_at=now, expires_at=now + self.session_lifetime))
            session.flush()
            crud.trim_sessions(session, account.id, keep=MAX_SESSIONS)
            session.commit()
        return secret

    def session_actor(self, secret: str | None) -> Actor | None:
        """Who a session cookie belongs to, or None (unknown, expired, logged out, account disabled)."""
        if not secret:
            return None
        now = utcnow()
        with session_scope(self.engine) as session:
            found = crud.session_with_account(session, _digest(secret))
            if found is None:
                return None
            login, account = found
            if login.expires_at <= now or account.disabled:
                return None
            if now - login.last_seen_at >= TOUCH_EVERY:
                crud.touch(session, LoginSession, login.id, "last_seen_at", now)
                session.commit()
            return Actor(account.name, account.role)

    def close_session(self, secret: str | None) -> None:
        """Log out this session (a cookie that is no session is no error: logging out twice is fine)."""
        if not secret:
            return
        with session_scope(self.engine) as session:
            crud.delete_sessions(session, token_hash=_digest(secret))
            session.commit()

    def close_all_sessions(self, actor: Actor) -> int:
        """Log this person out everywhere (every browser and gradio_client login); how many sessions ended."""
        with session_scope(self.engine) as session:
            account = crud.get_account(session, actor.name)
            count = crud.delete_sessions(session, account_id=account.id) if account else 0
            session.commit()
            return count

    def token_actor(self, secret: str | None) -> Actor | None:
        """Who a bearer token acts as (with the account's role now), or None (unknown, revoked, expired,
        account disabled)."""
        if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        now = utcnow()
        with session_scope(self.engine) as session:
            found = crud.token_with_account(session, _digest(secret))
            if found is None:
                return None
            token, account = found
            if token.revoked_at or (token.expires_at and token.expires_at <= now) or account.disabled:
                return None
            if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
                crud.touch(session, ApiToken, token.id, "last_used_at", now)
                session.commit()
            return Actor(account.name, account.role)

    # ---- one's own account ----------------------------------------------------------------------------------
    def me(self, actor: Actor) -> AccountInfo:
        with session_scope(self.engine) as session:
            return _info(self._account(session, actor.name))

    def change_password(self, actor: Actor, change: PasswordChange, keep_session: str | None = None) -> AccountInfo:
        """A person's own new password (the current one proves it is them); their other sessions end (keep_session:
        the cookie of the one they changed it from, which stays logged in)."""
        check_password(change.new_password, actor.name)
        with session_scope(self.engine) as session:
            account = self._account(session, actor.name)
            if not self._matches(account, change.current_password):
                raise InvalidValues("The current password is wrong.", code="wrong_password",
                                    errors=[{"field": "current_password", "message": "wrong password"}])
            account.password_hash, account.updated_at = self.hasher.hash(change.new_password), utcnow()
            session.add(account)
            crud.delete_sessions(session, account_id=account.id,
                                 except_hash=_digest(keep_session) if keep_session else None)
            session.commit()
            return _info(account)

    # ---- tokens ---------------------------------------------------------------------------------------------
    def create_token(self, actor: Actor, req: TokenCreate) -> NewToken:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        name = req.name.strip()
        if not name:
            raise InvalidValues("Give the token a name (what it is for).", code="invalid_token_name")
        with session_scope(self.engine) as session:
            account = self._account(session, actor.name)
            if crud.count_live_tokens(session, account.id, now) >= MAX_TOKENS:
                raise Conflict(f"You have {MAX_TOKENS} live API tokens: revoke some you no longer use first.",
                               code="too_many_tokens")
            token = ApiToken(account_id=account.id, name=name, prefix=secret[:len(TOKEN_PREFIX) + 6],
                             token_hash=_digest(secret), created_at=now,
                             expires_at=now + timedelta(days=req.expires_in_days) if req.expires_in_days else None)
            session.add(token)
            session.commit()
            session.refresh(token)
            return NewToken(token=secret, info=_token_info(token, account, now))

    def list_tokens(self, actor: Actor, everyone: bool = False) -> list[TokenInfo]:
        """The actor's own tokens; an admin may ask for everyone's."""
        if everyone and not actor.is_admin:
            raise Forbidden("Only an admin can list everyone's tokens.")
        now = utcnow()
        with session_scope(self.engine) as session:
            account_id = None if everyone else self._account(session, actor.name).id
            return [_token_info(t, a, now) for t, a in crud.list_tokens(session, account_id)]

    def revoke_token(self, actor: Actor, token_id: int) -> TokenInfo:
        """Revoke one of the actor's tokens (an admin: anyone's). Revoking twice is fine."""
        now = utcnow()
        with session_scope(self.engine) as session:
            token = session.get(ApiToken, token_id)
            owner = session.get(Account, token.account_id) if token else None
            if token is None or owner is None or not actor.may_see(owner.name):
                raise NotFound(f"There is no token {token_id} of yours.", code="token_not_found")
            if token.revoked_at is None:
                token.revoked_at = now
                session.add(token)
                session.commit()
            return _token_info(token, owner, now)

    # ---- accounts (admins) ----------------------------------------------------------------------------------
    def list_accounts(self, actor: Actor) -> list[AccountInfo]:
        self._admin(actor)
        with session_scope(self.engine) as session:
            return [_info(a) for a in crud.list_accounts(session)]

    def create_account(self, actor: Actor, req: AccountCreate) -> AccountInfo:
        self._admin(actor)
        name = check_name(req.name)
        check_password(req.password, name)
        if req.role not in ROLES:
            raise InvalidValues(f"Unknown role {req.role!r}: {', '.join(ROLES)}.", code="invalid_role")
        with session_scope(self.engine) as session:
            if crud.name_taken(session, name):
                raise Conflict(f"There is already a user {name!r}.", code="user_exists")
            account = Account(name=name, password_hash=self.hasher.hash(req.password), role=req.role,
                              created_by=actor.name)
            session.add(account)
            try:
                session.commit()
            except IntegrityError:  # created at the same moment by another request or studio
                session.rollback()
                raise Conflict(f"There is already a user {name!r}.", code="user_exists") from None
            return _info(account)

    def update_account(self, actor: Actor, name: str, req: AccountUpdate) -> AccountInfo:
        """Change a user's role, disable or enable them, or set a new password. The last enabled admin cannot be
        demoted or disabled (nobody could manage the studio any more)."""
        self._admin(actor)
        if req.password is not None:
            check_password(req.password, name)
        new_hash = self.hasher.hash(req.password) if req.password is not None else None  # before any lock
        with session_scope(self.engine) as session:
            # The enabled admins locked first, in id order, then the account: two admins edited at once lock in
            # the same order (PostgreSQL: the second waits, never a deadlock).
            crud.enabled_admins(session, lock=True)
            account = self._account(session, name, lock=True)
            demoted = req.role is not None and req.role != "admin" and account.role == "admin"
            disabled = req.disabled is True and account.role == "admin" and not account.disabled
            if req.role is not None:
                account.role = req.role
            if req.disabled is not None:
                account.disabled = req.disabled
            if new_hash is not None:
                account.password_hash = new_hash
            if req.disabled or new_hash is not None:
                crud.delete_sessions(session, account_id=account.id)  # out at once, everywhere
            account.updated_at = utcnow()
            session.add(account)
            session.flush()
            # Counted after the change, inside its transaction (SQLite: the writer sees every commit before it):
            # two admins demoting each other at once cannot both succeed.
            if (demoted or disabled) and not crud.enabled_admins(session):
                session.rollback()
                raise Conflict(f"{name!r} is the only admin left: make another user an admin first.",
                               code="last_admin")
            session.commit()
            return _info(account)

    # ---- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _admin(actor: Actor) -> None:
        if not actor.is_admin:
            raise Forbidden("Only an admin can manage users.")

    @staticmethod
    def _account(session, name: str, lock: bool = False) -> Account:
        account = crud.get_account(session, name, lock=lock) if lock else crud.get_account(session, name)
        if account is None:
            raise NotFound(f"There is no user {name!r}.", code="user_not_found")
        return account
