"""The role table over every route (studio/api/roles.py): every operation of /openapi.json and every named Gradio
endpoint, asked by no user, a member and an admin, answers as the declared table says; and the page's private
functions take the role of the area their triggers sit in."""
from __future__ import annotations

import re

import gradio as gr
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from studio.api.roles import ADMIN_ONLY, GRADIO_ROLES, REST_ROLES, GradioRoles, named_endpoints
from studio.services.accounts import AccountCreate, TokenCreate
from studio.users import Actor
from tests.conftest import LOCAL

ROOT = ("root", "root-password")
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="module")
def studio(module_studio):
    """One studio with an admin and a member, each with an API token."""
    ctx, client = module_studio(auth=ROOT)
    ctx.accounts.hasher = CHEAP
    root = Actor("root", "admin")
    ctx.accounts.create_account(root, AccountCreate(name="mia", password="mia-password", role="member"))
    tokens = {"admin": ctx.accounts.create_token(root, TokenCreate(name="roles test")).token,
              "member": ctx.accounts.create_token(Actor("mia", "member"), TokenCreate(name="roles test")).token}
    headers = {None: {}, **{role: {"authorization": f"Bearer {t}"} for role, t in tokens.items()}}
    return ctx, client, headers


def _blocks(app):
    return next(r.app.get_blocks() for r in app.routes if hasattr(getattr(r, "app", None), "get_blocks"))


def _operations(client, headers) -> list[tuple[str, str]]:
    doc = client.get("/openapi.json", headers=headers["admin"]).json()
    return sorted((method.upper(), path) for path, ops in doc["paths"].items() for method in ops)


def test_the_table_declares_every_operation_and_nothing_else(studio):
    _ctx, client, headers = studio
    operations = _operations(client, headers)
    assert len(operations) > 70
    assert sorted(REST_ROLES) == operations, "studio/api/roles.py REST_ROLES and /openapi.json differ"
    assert sorted(GRADIO_ROLES) == named_endpoints(_blocks(client.app)), \
        "studio/api/roles.py GRADIO_ROLES and the page's named endpoints differ"


def _expect(asked_as: str | None, needed: str) -> str:
    if asked_as is None:
        return "401"
    return "403" if needed == "admin" and asked_as == "member" else "allowed"


def _seen(status: int) -> str:
    return str(status) if status in (401, 403) else "allowed"


def test_every_rest_operation_as_no_user_member_and_admin(studio):
    """No body and ids that do not exist: an allowed request may answer 404 or 422, but never 401 or 403."""
    _ctx, client, headers = studio
    wrong = []
    for method, template in _operations(client, headers):
        path = re.sub(r"\{[^}]+\}", "999999", template)
        for role in (None, "member", "admin"):
            r = client.request(method, path, headers=headers[role])
            expected = _expect(role, REST_ROLES[(method, template)])
            if _seen(r.status_code) != expected:
                wrong.append(f"{role or 'no user'}: {method} {template} -> {r.status_code} (expected {expected})")
            elif r.status_code == 403:
                assert r.json()["detail"]["code"] == "forbidden" and "needs an admin" in r.json()["detail"]["message"]
    assert wrong == []


def test_every_named_gradio_endpoint_as_no_user_member_and_admin(studio):
    """gradio_client's /call route with an empty body: refused before Gradio (401, 403), or Gradio's own 422."""
    _ctx, client, headers = studio
    wrong = []
    for name, needed in sorted(GRADIO_ROLES.items()):
        for role in (None, "member", "admin"):
            r = client.post(f"/gradio_api/call/{name}", json={}, headers=headers[role])
            if _seen(r.status_code) != _expect(role, needed):
                wrong.append(f"{role or 'no user'}: {name} -> {r.status_code} (expected {_expect(role, needed)})")
    assert wrong == []


def test_the_page_cannot_run_an_admin_function_for_a_member(studio):
    """The page runs functions by index (queue/join), and a script may name an index on /run or /api: the
    function's own role decides, whatever the route or the name given beside it."""
    _ctx, client, headers = studio
    roles = client.app.state.gradio_roles
    admin_fn, member_fn = roles.by_name["save_generation_settings"], roles.by_name["generate"]
    member = headers["member"]
    join = {"data": [], "session_hash": "roles-test"}
    cases = [("/gradio_api/queue/join", {**join, "fn_index": admin_fn}, 403),
             ("/gradio_api/queue/join", {**join, "fn_index": str(admin_fn)}, 403),  # pydantic reads "7" as 7
             ("/gradio_api/queue/join", {**join, "fn_index": 10 ** 6}, 403),  # unknown: admins only
             ("/gradio_api/run/generate", {"data": [], "fn_index": admin_fn}, 403),
             ("/gradio_api/api/generate/", {"data": [], "fn_index": admin_fn}, 403),
             ("/gradio_api/call/v2/save_generation_settings", {}, 403),
             ("/gradio_api/component_server", {"session_hash": "x", "component_id": 10 ** 6, "fn_name": "ls",
                                               "data": None}, 403)]
    for path, body, status in cases:
        r = client.post(path, json=body, headers=member)
        assert r.status_code == status, (path, body, r.text)
        assert r.json()["detail"]["code"] == "forbidden"
    # the member's own function is not refused by the middleware (Gradio answers: the join is accepted)
    r = client.post("/gradio_api/queue/join", json={**join, "fn_index": member_fn, "data": []}, headers=member)
    assert r.status_code not in (401, 403), r.text
    # the page's queue=False events post their index to /run/predict, a name no function has: the index decides
    # (the "Signed in as" line of a member's page was refused when the name counted too)
    r = client.post("/gradio_api/run/predict", json={"data": [], "fn_index": member_fn}, headers=member)
    assert r.status_code not in (401, 403), r.text


def test_private_functions_take_the_role_of_their_area():
    """A small page: events wired inside an `admin-only` block (or a block inside one, or chained after one with
    .then) are admin-only, and so is a component's value function there; the rest and the page's load are
    members'."""
    with gr.Blocks() as demo:
        shown = gr.Textbox()
        member_btn = gr.Button("play")
        with gr.Column(elem_classes=[ADMIN_ONLY]):
            with gr.Row():
                admin_btn = gr.Button("delete")
            admin_value = gr.Markdown(lambda: "admin clock")
        marked = gr.Button("danger", elem_classes=["big", ADMIN_ONLY])  # the trigger itself carries the marker
        play = member_btn.click(lambda: "played", None, shown, api_visibility="private")
        delete = admin_btn.click(lambda: "deleted", None, shown, api_visibility="private")
        after_delete = delete.then(lambda: "and then", None, shown, api_visibility="private")
        danger = marked.click(lambda: "boom", None, shown, api_visibility="private")
        both = gr.on([member_btn.click, admin_btn.click], lambda: "either", None, shown, api_visibility="private")
        named = admin_btn.click(lambda: "named", None, shown, api_name="listed_for_members")
        load = demo.load(lambda: "hello", None, shown, api_visibility="private")
    roles = GradioRoles(demo, named={"listed_for_members": "member"})
    expect = [(play, "member"), (delete, "admin"), (after_delete, "admin"), (danger, "admin"), (both, "admin"),
              (named, "member"), (load, "member")]
    assert [roles.by_fn[dep["id"]] for dep, _role in expect] == [role for _dep, role in expect]
    loader = admin_value.load_event["id"]  # Gradio names it 'lambda' and makes it public: not a named endpoint
    assert roles.by_fn[loader] == "admin" and named_endpoints(demo) == ["listed_for_members"]
    assert roles.fn_role(10 ** 6) == "admin" and roles.name_role("unknown") == "admin"
    assert roles.component_role(admin_btn._id) == "admin" and roles.component_role(member_btn._id) == "member"


def test_the_middleware_refuses_a_marked_function_on_any_page(tmp_path):
    """The same rule end to end on a page of our own: a member's join of a function wired in an admin-only area
    is refused with the studio's 403; the other one is queued."""
    from studio.api.auth import AuthMiddleware
    from studio.db.engine import make_engine
    from studio.services.accounts import AccountService

    with gr.Blocks() as demo:
        out = gr.Textbox()
        ok = gr.Button("ok")
        with gr.Group(elem_classes=ADMIN_ONLY):  # a plain string works as well
            no = gr.Button("no")
        ok_event = ok.click(lambda: "ok", None, out, api_visibility="private")
        no_event = no.click(lambda: "no", None, out, api_visibility="private")
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    accounts = AccountService(engine, 1, True, hasher=CHEAP)
    accounts.bootstrap(("root", "root-password"))
    accounts.create_account(Actor("root", "admin"), AccountCreate(name="mia", password="mia-password"))
    token = accounts.create_token(Actor("mia", "member"), TokenCreate(name="t")).token
    app = FastAPI()
    app.state.gradio_roles = GradioRoles(demo)
    app = gr.mount_gradio_app(app, demo, path="")
    app.add_middleware(AuthMiddleware, accounts=accounts)
    member = {"authorization": f"Bearer {token}"}
    with TestClient(app, base_url=LOCAL) as client:
        body = {"data": [], "session_hash": "s1"}
        refused = client.post("/gradio_api/queue/join", json={**body, "fn_index": no_event["id"]}, headers=member)
        assert refused.status_code == 403 and refused.json()["detail"]["code"] == "forbidden"
        accepted = client.post("/gradio_api/queue/join", json={**body, "fn_index": ok_event["id"]}, headers=member)
        assert accepted.status_code == 200 and "event_id" in accepted.json()
        admin = client.post("/gradio_api/queue/join", json={**body, "fn_index": no_event["id"]},
                            auth=("root", "root-password"))
        assert admin.status_code == 200
    engine.dispose()
