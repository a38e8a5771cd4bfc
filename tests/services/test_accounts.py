"""AccountService: accounts with hashed passwords, the --auth bootstrap, login sessions, API tokens, the last-admin
guard, and what a person may do to their own account and an admin to anyone's."""
from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update
from sqlmodel import Session, select

from studio.db.engine import make_engine
from studio.db.models import Account, ApiToken, LoginSession, utcnow
from studio.errors import Conflict, Forbidden, InvalidValues, NotFound
from studio.services.accounts import (AccountCreate, AccountService, AccountUpdate, PasswordChange, TokenCreate,
                                      check_name)
from studio.users import Actor

ROOT = Actor("root", "admin")
CHEAP = dict(time_cost=1, memory_cost=8, parallelism=1)  # argon2id still, at a test's cost


@pytest.fixture
def engine(engine_url):
    """Each database in turn (SQLite, PostgreSQL): sessions, tokens and the last-admin lock on both."""
    engine = make_engine(engine_url)
    yield engine
    engine.dispose()


def service(engine, login_required: bool = True, session_hours: float = 24) -> AccountService:
    return AccountService(engine, session_hours, login_required, hasher=PasswordHasher(**CHEAP))


@pytest.fixture
def accounts(engine) -> AccountService:
    svc = service(engine)
    svc.bootstrap(("root", "root-password"))
    svc.create_account(ROOT, AccountCreate(name="mia", password="mia-password", role="member"))
    return svc


MIA = Actor("mia", "member")


def _rows(engine, model):
    with Session(engine) as s:
        return list(s.exec(select(model)))


# ---- accounts and the bootstrap ------------------------------------------------------------------------------------
def test_passwords_are_stored_as_argon2id_hashes_only(accounts, engine):
    stored = {a.name: a.password_hash for a in _rows(engine, Account)}
    assert set(stored) == {"root", "mia"}
    for name, value in stored.items():
        assert value.startswith("$argon2id$") and "password" not in value, name


def test_authenticate_right_wrong_unknown_and_disabled(accounts):
    assert accounts.authenticate("mia", "mia-password") == MIA
    assert accounts.authenticate(" mia ", "mia-password") == MIA  # as typed in a form
    assert accounts.authenticate("mia", "wrong-password") is None
    assert accounts.authenticate("nobody", "mia-password") is None
    assert accounts.authenticate("mia", "x" * 5000) is None  # hashing cost stays bounded
    accounts.update_account(ROOT, "mia", AccountUpdate(disabled=True))
    assert accounts.authenticate("mia", "mia-password") is None


def test_a_remembered_login_follows_a_password_change(accounts):
    """HTTP Basic sends the password on each request, so good logins are remembered: a new password (or a
    disabled account) must still apply at the next request."""
    assert accounts.authenticate("mia", "mia-password") == MIA
    accounts.change_password(MIA, PasswordChange(current_password="mia-password", new_password="new-password"))
    assert accounts.authenticate("mia", "mia-password") is None
    assert accounts.authenticate("mia", "new-password") == MIA
    accounts.update_account(ROOT, "mia", AccountUpdate(disabled=True))
    assert accounts.authenticate("mia", "new-password") is None


def test_bootstrap_creates_the_admin_and_restores_it(engine):
    svc = service(engine, login_required=False)
    assert not svc.required and not svc.has_accounts()
    svc.bootstrap(("boss", "first-password"))
    assert svc.required and svc.authenticate("boss", "first-password") == Actor("boss", "admin")
    svc.create_account(Actor("boss", "admin"), AccountCreate(name="second", password="second-pass", role="admin"))
    svc.update_account(Actor("second", "admin"), "boss", AccountUpdate(role="member", disabled=True))
    # the next start with --auth is the way back in: an enabled admin with that password again
    again = service(engine, login_required=False)
    assert again.required  # the database holds accounts: a login stays required without --auth
    again.bootstrap(("boss", "lost-and-reset"))
    assert again.authenticate("boss", "lost-and-reset") == Actor("boss", "admin")
    assert again.authenticate("boss", "first-password") is None


@pytest.mark.parametrize("name", ["", "local", "System", "-dash", "a b", "x" * 65, "é"])
def test_invalid_or_reserved_user_names(accounts, name):
    with pytest.raises(InvalidValues) as err:
        accounts.create_account(ROOT, AccountCreate.model_construct(name=name, password="long-enough-1", role="member"))
    assert err.value.code == "invalid_user_name"


@pytest.mark.parametrize("password", ["short", "mia.member"])
def test_weak_passwords_are_refused(accounts, password):
    with pytest.raises(InvalidValues) as err:  # model_construct: past the request model, to the service's own check
        accounts.create_account(ROOT, AccountCreate.model_construct(name="mia.member", password=password,
                                                                    role="member"))
    assert err.value.code == "weak_password"


def test_names_are_unique_whatever_their_case(accounts):
    for name in ("mia", "MIA"):
        with pytest.raises(Conflict) as err:
            accounts.create_account(ROOT, AccountCreate(name=name, password="another-pass"))
        assert err.value.code == "user_exists"


def test_only_admins_manage_accounts(accounts):
    for call in (lambda: accounts.list_accounts(MIA),
                 lambda: accounts.create_account(MIA, AccountCreate(name="eve", password="eve-password")),
                 lambda: accounts.update_account(MIA, "mia", AccountUpdate(role="admin"))):
        with pytest.raises(Forbidden):
            call()
    assert [a.name for a in accounts.list_accounts(ROOT)] == ["mia", "root"]
    with pytest.raises(NotFound):
        accounts.update_account(ROOT, "ghost", AccountUpdate(role="admin"))


def test_the_last_admin_cannot_be_demoted_or_disabled(accounts):
    for change in (AccountUpdate(role="member"), AccountUpdate(disabled=True)):
        with pytest.raises(Conflict) as err:
            accounts.update_account(ROOT, "root", change)
        assert err.value.code == "last_admin"
    assert accounts.authenticate("root", "root-password") == ROOT  # unchanged
    accounts.update_account(ROOT, "mia", AccountUpdate(role="admin"))
    accounts.update_account(ROOT, "root", AccountUpdate(role="member"))  # another admin is left now
    with pytest.raises(Conflict):
        accounts.update_account(Actor("mia", "admin"), "mia", AccountUpdate(disabled=True))


# ---- sessions ------------------------------------------------------------------------------------------------------
def test_sessions_open_end_and_are_stored_hashed(accounts, engine):
    secret = accounts.open_session(MIA)
    assert accounts.session_actor(secret) == MIA
    assert accounts.session_actor(secret + "x") is None and accounts.session_actor(None) is None
    (row,) = _rows(engine, LoginSession)
    assert secret not in row.token_hash and len(row.token_hash) == 64
    assert timedelta(hours=23.9) < row.expires_at - row.created_at <= timedelta(hours=24)  # session_hours=24
    accounts.close_session(secret)
    accounts.close_session(secret)  # twice is fine
    assert accounts.session_actor(secret) is None


def test_an_expired_session_is_refused(accounts, engine):
    secret = accounts.open_session(MIA)
    with Session(engine) as s:
        s.exec(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert accounts.session_actor(secret) is None


def test_logout_everywhere_and_a_new_password_end_sessions(accounts):
    first, second = accounts.open_session(MIA), accounts.open_session(MIA)
    other = accounts.open_session(ROOT)
    assert accounts.close_all_sessions(MIA) == 2
    assert accounts.session_actor(first) is None and accounts.session_actor(second) is None
    assert accounts.session_actor(other) == ROOT  # someone else's stay
    here, elsewhere = accounts.open_session(MIA), accounts.open_session(MIA)
    with pytest.raises(InvalidValues) as err:
        accounts.change_password(MIA, PasswordChange(current_password="nope", new_password="new-password"),
                                 keep_session=here)
    assert err.value.code == "wrong_password"
    accounts.change_password(MIA, PasswordChange(current_password="mia-password", new_password="new-password"),
                             keep_session=here)
    assert accounts.session_actor(here) == MIA and accounts.session_actor(elsewhere) is None


def test_disabling_or_resetting_a_password_ends_sessions_and_tokens_at_once(accounts):
    session = accounts.open_session(MIA)
    token = accounts.create_token(MIA, TokenCreate(name="script")).token
    accounts.update_account(ROOT, "mia", AccountUpdate(password="set-by-admin"))
    assert accounts.session_actor(session) is None and accounts.token_actor(token) == MIA
    session = accounts.open_session(MIA)
    accounts.update_account(ROOT, "mia", AccountUpdate(disabled=True))
    assert accounts.session_actor(session) is None and accounts.token_actor(token) is None
    accounts.update_account(ROOT, "mia", AccountUpdate(disabled=False))
    assert accounts.token_actor(token) == MIA  # tokens were not revoked, only refused while disabled


# ---- tokens --------------------------------------------------------------------------------------------------------
def test_tokens_act_with_the_accounts_current_role(accounts, engine):
    new = accounts.create_token(MIA, TokenCreate(name="nightly renders", expires_in_days=30))
    assert new.token.startswith("t2s_") and new.info.prefix == new.token[:10] and new.info.state == "active"
    assert accounts.token_actor(new.token) == MIA
    accounts.update_account(ROOT, "mia", AccountUpdate(role="admin"))
    assert accounts.token_actor(new.token) == Actor("mia", "admin")
    (row,) = _rows(engine, ApiToken)
    assert new.token not in row.token_hash and row.last_used_at is not None
    for bad in (None, "", "t2s_unknown", "hf_notours", new.token + "x", "t2s_" + "x" * 500):
        assert accounts.token_actor(bad) is None


def test_token_lists_never_show_the_secret(accounts):
    mine = accounts.create_token(MIA, TokenCreate(name="mine"))
    root = accounts.create_token(ROOT, TokenCreate(name="root's"))
    listed = accounts.list_tokens(MIA)
    assert [t.name for t in listed] == ["mine"] and mine.token not in listed[0].model_dump_json()
    assert {t.owner for t in accounts.list_tokens(ROOT, everyone=True)} == {"mia", "root"}
    with pytest.raises(Forbidden):
        accounts.list_tokens(MIA, everyone=True)
    with pytest.raises(NotFound):  # someone else's token is no token of hers
        accounts.revoke_token(MIA, root.info.id)


def test_revoked_and_expired_tokens_are_refused(accounts, engine):
    revoked = accounts.create_token(MIA, TokenCreate(name="old"))
    assert accounts.revoke_token(MIA, revoked.info.id).state == "revoked"
    assert accounts.revoke_token(MIA, revoked.info.id).state == "revoked"  # twice is fine
    assert accounts.token_actor(revoked.token) is None
    expiring = accounts.create_token(MIA, TokenCreate(name="short", expires_in_days=1))
    with Session(engine) as s:
        s.exec(update(ApiToken).where(ApiToken.id == expiring.info.id)
               .values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert accounts.token_actor(expiring.token) is None
    assert {t.name: t.state for t in accounts.list_tokens(MIA)} == {"old": "revoked", "short": "expired"}
    admin_revokes = accounts.create_token(MIA, TokenCreate(name="leaked"))
    accounts.revoke_token(ROOT, admin_revokes.info.id)  # an admin may revoke anyone's
    assert accounts.token_actor(admin_revokes.token) is None


def test_live_tokens_per_account_are_bounded(accounts, monkeypatch):
    monkeypatch.setattr("studio.services.accounts.MAX_TOKENS", 2)
    first = accounts.create_token(MIA, TokenCreate(name="a"))
    accounts.create_token(MIA, TokenCreate(name="b"))
    with pytest.raises(Conflict) as err:
        accounts.create_token(MIA, TokenCreate(name="c"))
    assert err.value.code == "too_many_tokens"
    accounts.revoke_token(MIA, first.info.id)
    accounts.create_token(MIA, TokenCreate(name="c"))


def test_accounts_off_without_a_login(engine):
    svc = service(engine, login_required=False)
    with pytest.raises(Conflict) as err:
        svc.check_on()
    assert err.value.code == "accounts_off" and "STUDIO_AUTH" in err.value.message
    svc.bootstrap(("root", "root-password"))
    svc.check_on()


def test_check_name_strips_and_keeps_case():
    assert check_name("  Ada.L@lab-1 ") == "Ada.L@lab-1"


def test_login_sessions_per_account_are_bounded(accounts, monkeypatch):
    monkeypatch.setattr("studio.services.accounts.MAX_SESSIONS", 2)
    first, second, third = (accounts.open_session(MIA) for _ in range(3))
    assert accounts.session_actor(first) is None  # the oldest gave way
    assert accounts.session_actor(second) == MIA and accounts.session_actor(third) == MIA
