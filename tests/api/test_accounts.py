"""Accounts, API tokens and login sessions through the edge and the REST API (studio/api/accounts.py, auth.py):
tokens created, used (REST and gradio_client), listed without their secret, revoked, hashed at rest, expired; a
token's role follows its account; a disabled account is out at once; sessions expire and end everywhere; failed
logins are throttled per address and per name; two studios on one database share their logins."""
from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session

from studio.api.auth import NAME_ATTEMPTS_PER_MINUTE
from studio.db.models import ApiToken, LoginSession, utcnow
from studio.server import build_app
from tests.conftest import LOCAL

ROOT = ("root", "root-password")
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def studio(module_studio):
    """A studio whose admin is root (--auth); each test makes its own users."""
    ctx, client = module_studio(auth=ROOT)
    ctx.accounts.hasher = CHEAP
    return ctx, client


def add_user(client, name: str, role: str = "member", password: str | None = None) -> str:
    password = password or f"{name}-password"
    r = client.post("/api/users", json={"name": name, "password": password, "role": role}, headers=basic(*ROOT))
    assert r.status_code == 201, r.text
    assert r.json() | {"created_at": None} == {"name": name, "role": role, "disabled": False, "created_at": None,
                                               "created_by": "root"}
    return password


def logged_in(app, name: str, password: str, **headers) -> TestClient:
    """A client of its own (a browser) logged in through POST /login, as gradio_client does."""
    browser = TestClient(app, base_url=LOCAL)
    r = browser.post("/login", data={"username": name, "password": password}, headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    return browser


def new_token(client, headers, name="script", **extra) -> dict:
    r = client.post("/api/tokens", json={"name": name, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


# ---- without a login -----------------------------------------------------------------------------------------------
def test_a_studio_without_login_is_its_local_admin_and_has_no_accounts(module_studio):
    _ctx, client = module_studio()
    assert client.get("/api/me").json() == {"name": "local", "role": "admin", "auth": False}
    for method, path, body in [("GET", "/api/users", None), ("POST", "/api/users", {"name": "a", "password": "x" * 8}),
                               ("PATCH", "/api/users/a", {}), ("GET", "/api/tokens", None),
                               ("POST", "/api/tokens", {"name": "t"}), ("DELETE", "/api/tokens/1", None),
                               ("PUT", "/api/me/password", {"current_password": "a", "new_password": "b" * 8}),
                               ("POST", "/api/me/logout-everywhere", None)]:
        r = client.request(method, path, json=body)
        assert r.status_code == 409 and r.json()["detail"]["code"] == "accounts_off", (method, path, r.text)
        assert "STUDIO_AUTH" in r.json()["detail"]["message"]


# ---- tokens --------------------------------------------------------------------------------------------------------
def test_a_token_is_created_used_listed_without_its_secret_and_revoked(studio):
    ctx, client = studio
    password = add_user(client, "tia")
    with logged_in(client.app, "tia", password) as browser:
        made = new_token(browser, {}, name="nightly renders", expires_in_days=30)
    token, info = made["token"], made["info"]
    assert token.startswith("t2s_") and info["owner"] == "tia" and info["state"] == "active"
    assert token.startswith(info["prefix"]) and len(info["prefix"]) < 12
    with TestClient(client.app, base_url=LOCAL) as script:  # no cookie: the token alone
        assert script.get("/api/me", headers=bearer(token)).json() == {"name": "tia", "role": "member", "auth": True}
        listed = script.get("/api/tokens", headers=bearer(token))
        assert [t["name"] for t in listed.json()] == ["nightly renders"] and token not in listed.text
        assert listed.json()[0]["last_used_at"] is not None
        r = script.delete(f"/api/tokens/{info['id']}", headers=bearer(token))
        assert r.status_code == 200 and r.json()["state"] == "revoked" and token not in r.text
        r = script.get("/api/me", headers=bearer(token))
        assert r.status_code == 401 and r.json()["detail"]["code"] == "invalid_token"
    assert ctx.accounts.token_actor(token) is None


def test_members_see_their_own_tokens_admins_everyones(studio):
    _ctx, client = studio
    password = add_user(client, "moe")
    mine = new_token(client, basic("moe", password), name="moe's")
    roots = new_token(client, basic(*ROOT), name="root's")
    r = client.get("/api/tokens", params={"all": "true"}, headers=basic("moe", password))
    assert r.status_code == 403 and r.json()["detail"]["code"] == "forbidden"
    owners = {t["owner"] for t in client.get("/api/tokens", params={"all": "true"}, headers=basic(*ROOT)).json()}
    assert {"moe", "root"} <= owners
    r = client.delete(f"/api/tokens/{roots['info']['id']}", headers=basic("moe", password))
    assert r.status_code == 404 and r.json()["detail"]["code"] == "token_not_found"
    r = client.delete(f"/api/tokens/{mine['info']['id']}", headers=basic(*ROOT))  # an admin revokes anyone's
    assert r.status_code == 200 and r.json()["state"] == "revoked"


def test_secrets_and_passwords_are_hashed_at_rest(studio):
    """The database files hold no token, password or session cookie as text (WAL included)."""
    ctx, client = studio
    password = add_user(client, "hal", password="correct horse battery")
    token = new_token(client, basic("hal", password))["token"]
    with logged_in(client.app, "hal", password) as browser:
        cookie = browser.cookies["studio-session"]
        assert browser.get("/api/me").json()["name"] == "hal"
    files = sorted(ctx.settings.data_dir.glob("studio.db*"))
    assert files
    for secret in (token, token.removeprefix("t2s_"), password, cookie, ROOT[1]):
        assert not any(secret.encode() in f.read_bytes() for f in files), secret


def test_an_expired_token_is_refused(studio):
    ctx, client = studio
    password = add_user(client, "eve")
    made = new_token(client, basic("eve", password), expires_in_days=1)
    assert client.get("/api/me", headers=bearer(made["token"])).status_code == 200
    with Session(ctx.engine) as s:
        s.exec(update(ApiToken).where(ApiToken.id == made["info"]["id"])
               .values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    r = client.get("/api/me", headers=bearer(made["token"]))
    assert r.status_code == 401 and r.json()["detail"]["code"] == "invalid_token"
    assert client.get("/api/tokens", headers=basic("eve", password)).json()[0]["state"] == "expired"


def test_a_tokens_role_follows_its_account(studio):
    _ctx, client = studio
    add_user(client, "ada", role="admin")
    token = new_token(client, basic("ada", "ada-password"))["token"]
    assert client.get("/api/users", headers=bearer(token)).status_code == 200
    assert client.patch("/api/users/ada", json={"role": "member"}, headers=basic(*ROOT)).json()["role"] == "member"
    r = client.get("/api/users", headers=bearer(token))
    assert r.status_code == 403 and r.json()["detail"]["code"] == "forbidden"
    assert client.get("/api/me", headers=bearer(token)).json()["role"] == "member"
    client.patch("/api/users/ada", json={"role": "admin"}, headers=basic(*ROOT))
    assert client.get("/api/users", headers=bearer(token)).status_code == 200


def test_a_disabled_account_is_locked_out_at_once(studio):
    """Its session, its token and its password all stop at the next request; enabling it brings the token back."""
    _ctx, client = studio
    password = add_user(client, "dan")
    token = new_token(client, basic("dan", password))["token"]
    with logged_in(client.app, "dan", password) as browser:
        ways = [lambda: browser.get("/api/me"), lambda: client.get("/api/me", headers=bearer(token)),
                lambda: client.get("/api/me", headers=basic("dan", password))]
        assert [w().status_code for w in ways] == [200, 200, 200]
        r = client.patch("/api/users/dan", json={"disabled": True}, headers=basic(*ROOT))
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert [w().status_code for w in ways] == [401, 401, 401]
        assert browser.post("/login", data={"username": "dan", "password": password}).status_code == 401
    client.patch("/api/users/dan", json={"disabled": False}, headers=basic(*ROOT))
    assert client.get("/api/me", headers=bearer(token)).status_code == 200


def test_users_are_managed_by_admins_with_clear_refusals(studio):
    _ctx, client = studio
    password = add_user(client, "una")
    member = basic("una", password)
    cases = [("POST", "/api/users", {"name": "una", "password": "x" * 8}, basic(*ROOT), 409, "user_exists"),
             ("POST", "/api/users", {"name": "local", "password": "x" * 8}, basic(*ROOT), 422, "invalid_user_name"),
             ("POST", "/api/users", {"name": "neo", "password": "neo"}, basic(*ROOT), 422, "invalid_body"),
             ("PATCH", "/api/users/ghost", {"role": "admin"}, basic(*ROOT), 404, "user_not_found"),
             ("PATCH", "/api/users/una", {"role": "superuser"}, basic(*ROOT), 422, "invalid_body"),
             ("PATCH", "/api/users/una", {"role": "admin"}, member, 403, "forbidden"),
             ("POST", "/api/users", {"name": "neo", "password": "x" * 8}, member, 403, "forbidden")]
    for method, path, body, headers, status, code in cases:
        r = client.request(method, path, json=body, headers=headers)
        assert (r.status_code, r.json()["detail"]["code"]) == (status, code), (method, path, body, r.text)
    assert "una" in [u["name"] for u in client.get("/api/users", headers=basic(*ROOT)).json()]


# ---- sessions ------------------------------------------------------------------------------------------------------
def test_logout_everywhere_ends_every_session_of_the_person(studio):
    _ctx, client = studio
    password = add_user(client, "lou")
    with logged_in(client.app, "lou", password) as laptop, logged_in(client.app, "lou", password) as phone, \
            logged_in(client.app, *ROOT) as admin:
        r = laptop.post("/api/me/logout-everywhere")
        assert r.status_code == 200 and r.json() == {"sessions_ended": 2}
        assert laptop.get("/api/me").status_code == 401 and phone.get("/api/me").status_code == 401
        assert admin.get("/api/me").status_code == 200  # someone else's session stays


def test_a_new_password_keeps_this_session_and_ends_the_others(studio):
    _ctx, client = studio
    password = add_user(client, "pat")
    with logged_in(client.app, "pat", password) as here, logged_in(client.app, "pat", password) as there:
        r = here.put("/api/me/password", json={"current_password": "wrong-one", "new_password": "brand-new-pass"})
        assert r.status_code == 422 and r.json()["detail"]["code"] == "wrong_password"
        r = here.put("/api/me/password", json={"current_password": password, "new_password": "brand-new-pass"})
        assert r.status_code == 200, r.text
        assert here.get("/api/me").status_code == 200 and there.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=basic("pat", "brand-new-pass")).status_code == 200
    assert client.get("/api/me", headers=basic("pat", password)).status_code == 401


def test_sessions_last_session_hours_and_expire(module_studio):
    ctx, client = module_studio(auth=ROOT, session_hours=2)
    r = client.post("/login", data={"username": ROOT[0], "password": ROOT[1]})
    cookie = r.headers["set-cookie"]
    assert "Max-Age=7200" in cookie and "HttpOnly" in cookie and "Secure" not in cookie  # plain http here
    assert client.get("/api/me").status_code == 200
    with Session(ctx.engine) as s:
        s.exec(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    r = client.get("/api/me")
    assert r.status_code == 401 and 'studio-session=""' in r.headers.get("set-cookie", "")  # the browser forgets it
    # behind a proxy that says https (a Space), the cookie is never sent in clear text
    r = client.post("/login", data={"username": ROOT[0], "password": ROOT[1]}, headers={"x-forwarded-proto": "https"})
    assert "Secure" in r.headers["set-cookie"]


def test_two_studios_on_one_database_share_logins(make_module_ctx, tmp_path_factory):
    """A login on one studio opens the other; a logout on either ends it on both; the second studio asks for a
    login although started without --auth (the database holds accounts)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'team.db'}"
    first = make_module_ctx(auth=ROOT, database_url=url)
    second = make_module_ctx(database_url=url)
    assert second.accounts.required
    with TestClient(build_app(first, load_model=False), base_url=LOCAL) as a, \
            TestClient(build_app(second, load_model=False), base_url=LOCAL) as b:
        assert b.get("/api/me").status_code == 401
        assert a.post("/login", data={"username": ROOT[0], "password": ROOT[1]}).status_code == 200
        b.cookies.update(a.cookies)
        assert b.get("/api/me").json() == {"name": "root", "role": "admin", "auth": True}
        token = new_token(b, {})["token"]
        assert a.get("/api/me", headers=bearer(token)).status_code == 200
        b.get("/logout", follow_redirects=False)
        assert a.get("/api/me").status_code == 401


# ---- a Space: the first admin, and throttling per address and per name --------------------------------------------
def test_a_space_without_accounts_opens_nothing_and_says_how_to_begin(module_studio):
    ctx, client = module_studio(space_id="team/studio")
    page = client.get("/login", headers={"accept": "text/html"})
    assert page.status_code == 200 and "STUDIO_AUTH=USER:PASS" in page.text and 'name="password"' not in page.text
    r = client.post("/login", data={"username": "root", "password": "anything1"})
    assert r.status_code == 401 and r.json()["detail"]["code"] == "no_accounts"
    for path in ("/api/models", "/api/me", "/gradio_api/info", "/config"):
        assert client.get(path).status_code == 401, path
    ctx.accounts.bootstrap(ROOT)  # what STUDIO_AUTH does at the next start
    assert 'name="password"' in client.get("/login", headers={"accept": "text/html"}).text
    assert client.get("/api/me", headers=basic(*ROOT)).status_code == 200


def test_failed_logins_are_throttled_per_address_and_per_name(module_studio):
    """Behind a Space's proxy the client is the address the proxy adds last to X-Forwarded-For."""
    ctx, client = module_studio(space_id="team/studio", auth=ROOT)
    ctx.accounts.hasher = CHEAP

    def login(name: str, password: str, address: str):
        return client.post("/login", data={"username": name, "password": password},
                           headers={"x-forwarded-for": f"203.0.113.99, {address}"})

    # one address guessing many names
    assert [login(f"guess{i}", "nope-nope", "10.0.0.1").status_code for i in range(5)] == [401] * 5
    r = login(*ROOT, "10.0.0.1")
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["detail"]["code"] == "too_many_attempts"
    assert login(*ROOT, "10.0.0.2").status_code == 200  # another person is not held back
    client.cookies.clear()
    # one stranger cannot lock a person out: five wrong passwords for root from one address, root logs in elsewhere
    assert [login("root", "nope-nope", "10.0.3.1").status_code for _ in range(5)] == [401] * 5
    assert login(*ROOT, "10.0.3.2").status_code == 200
    client.cookies.clear()
    # many addresses guessing one name: past NAME_ATTEMPTS_PER_MINUTE its right password waits too, from anywhere;
    # other names do not
    guesses = [login("root", "nope-nope", f"10.0.1.{i}").status_code for i in range(NAME_ATTEMPTS_PER_MINUTE)]
    assert guesses == [401] * NAME_ATTEMPTS_PER_MINUTE
    assert login(*ROOT, "10.0.2.1").status_code == 429
    assert client.get("/api/me", headers={**basic(*ROOT), "x-forwarded-for": "10.0.2.2"}).status_code == 429
    ctx.accounts.bootstrap(("other", "other-password"))
    assert login("other", "other-password", "10.0.2.3").status_code == 200


def test_a_burst_of_parallel_guesses_is_counted_before_any_is_checked(module_studio):
    """Attempts are counted before the password is hashed: 20 guesses sent at once from one address get 5 checks
    (401) and 15 refusals (429), not 20 checks."""
    from concurrent.futures import ThreadPoolExecutor

    ctx, client = module_studio(space_id="team/studio", auth=ROOT)  # behind a proxy: its own address below
    ctx.accounts.hasher = CHEAP

    def guess(i: int) -> int:
        return client.post("/login", data={"username": "root", "password": f"guess-{i}"},
                           headers={"x-forwarded-for": "10.9.9.9"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(guess, range(20)))
    assert statuses == [401] * 5 + [429] * 15


# ---- gradio_client with a token against the real server ------------------------------------------------------------
def test_gradio_client_with_a_bearer_token(make_module_ctx):
    from gradio_client import Client

    from studio.services.accounts import AccountCreate, TokenCreate
    from studio.users import Actor
    from tests.live import serve

    ctx = make_module_ctx(auth=ROOT)
    ctx.accounts.hasher = CHEAP
    ctx.accounts.create_account(Actor("root", "admin"), AccountCreate(name="gus", password="gus-password"))
    member = ctx.accounts.create_token(Actor("gus", "member"), TokenCreate(name="client")).token
    admin = ctx.accounts.create_token(Actor("root", "admin"), TokenCreate(name="client")).token
    with serve(ctx) as url:
        as_member = Client(url, headers=bearer(member), verbose=False)
        settings = as_member.predict("studio-tiny", api_name="/generation_settings")
        assert settings["model_id"] == "studio-tiny"
        with pytest.raises(Exception) as refused:
            as_member.predict("studio-tiny", {"top_k": 7}, api_name="/save_generation_settings")
        assert "403" in str(refused.value) or "admin" in str(refused.value)
        assert ctx.gen_config.get("studio-tiny").values["top_k"] != 7
        as_admin = Client(url, headers=bearer(admin), verbose=False)
        saved = as_admin.predict("studio-tiny", {"top_k": 7}, api_name="/save_generation_settings")
        assert saved["values"]["top_k"] == 7
        assert ctx.gen_config.history("studio-tiny").changes[0].changed_by == "root"


def test_a_member_cannot_download_another_persons_audio_through_gradio(module_studio):
    """Gradio's file route serves the outputs folder (the page's players): a member gets their own jobs' files
    only, another person's are as unknown as their jobs (404); an admin gets everyone's."""
    from studio.services.accounts import AccountCreate
    from studio.services.generation import GenerateRequest
    from studio.users import Actor

    ctx, client = module_studio(load=True, auth=ROOT)
    ctx.accounts.hasher = CHEAP
    for name in ("ana", "ben"):
        ctx.accounts.create_account(Actor("root", "admin"), AccountCreate(name=name, password=f"{name}-password"))
    files = {}
    for name in ("ana", "ben"):
        job = ctx.generation.generate(GenerateRequest(prompt=f"{name}'s tune", duration_s=0.2, seed=1),
                                      actor=Actor(name, "member"))
        files[name] = str(ctx.jobs.audio_path(job.job_id))
    ana = basic("ana", "ana-password")
    assert client.get(f"/gradio_api/file={files['ana']}", headers=ana).status_code == 200
    r = client.get(f"/gradio_api/file={files['ben']}", headers=ana)
    assert r.status_code == 404 and r.json()["detail"]["code"] == "file_not_found"
    assert client.get(f"/gradio_api/file/{files['ben']}", headers=ana).status_code == 404
    assert client.get(f"/gradio_api/file={files['ben']}", headers=basic(*ROOT)).status_code == 200


def test_an_api_token_cannot_create_tokens(module_studio):
    """A leaked short-lived token must not mint itself a lasting heir: tokens are created logged in."""
    from studio.services.accounts import TokenCreate
    from studio.users import Actor

    ctx, client = module_studio(auth=ROOT)
    ctx.accounts.hasher = CHEAP
    token = ctx.accounts.create_token(Actor("root", "admin"), TokenCreate(name="ci", expires_in_days=1)).token
    r = client.post("/api/tokens", json={"name": "heir"}, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["detail"]["code"] == "token_cannot_create_tokens"
    assert client.post("/api/tokens", json={"name": "ok"}, headers=basic(*ROOT)).status_code == 201
