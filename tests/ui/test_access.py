"""Admin areas of the page (studio/ui/access.py): every admin action is inside one, every member action outside,
a member's page hides them all at load, and nothing a member's page does at load or on a timer sets off an admin
area's own events (the server would refuse them, and the member would see it)."""
from __future__ import annotations

import gradio as gr
import pytest
from starlette.requests import Request

from studio.ui.access import admin_areas, in_admin_area, is_admin_only
from studio.ui.app import build_ui
from studio.users import Actor

MEMBER, ADMIN = Actor("mia", "member"), Actor("boss", "admin")

# Controls (elem_id) whose functions are an admin's: models, adapters, settings, training, datasets, evaluation
# runs, A/B test management, users.
ADMIN_CONTROLS = [
    "gen-model", "model-dropdown",  # switching the model
    "adapter-rename-open", "rename-dialog-save", "adapter-name-edit", "adapter-name-reset", "adapter-active",
    "adapter-delete", "adapter-delete-confirm", "adapter-restore", "register-btn", "register-api", "register-version",
    "adapter-evaluate", "quick-ab-btn",
    "ab-create", "ab-close", "ab-cancel", "ab-resume", "ab-delete",
    "config-save", "config-reset-yes", "config-model", "custom-add", "custom-remove", "import-btn", "import-api",
    "evaluation-use",
    "dataset-create-btn", "dataset-save", "dataset-delete", "dataset-summary", "training-create", "training-stop",
    "training-resume", "training-register",
    "user-add-btn", "user-role-btn", "user-disable", "user-enable", "user-password-btn", "all-token-revoke",
]
# A member's: generate, rate, the queue, their own jobs (History), listening and voting, reading the adapters and
# comparing them, their own tokens and password.
MEMBER_CONTROLS = [
    "generate-btn", "cancel-btn", "generate-api", "submit-job-api", "cancel-job-api", "adapter", "rate-result",
    "extend-this", "melody", "continue-clip",
    "history-table", "history-stars", "history-score", "history-delete-yes", "history-again", "history-refresh",
    "adapters-table", "adapters-refresh", "adapters-active-only", "compare-btn",
    "ab-choice", "ab-start", "ab-vote-first", "ab-vote-none", "ab-vote-second", "ab-refresh",
    "account-logout-all", "account-password-btn", "token-create", "my-token-revoke", "new-token-done",
]


def as_page(actor: Actor) -> gr.Request:
    return gr.Request(request=Request({"type": "http", "headers": [], "path": "/", "state": {"actor": actor}}))


@pytest.fixture(scope="module")
def demo(make_module_ctx):
    """The page of a studio with accounts (the Account tab's admin panel included)."""
    return build_ui(make_module_ctx(auth=(ADMIN.name, "boss-password")))


def by_id(demo: gr.Blocks, elem_id: str):
    found = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


def triggered_by(demo: gr.Blocks, block) -> list:
    fns = [f for f in demo.fns.values() if any(t[0] == block._id for t in f.targets)]
    assert fns, f"nothing is triggered by {block.elem_id}"
    return fns


@pytest.mark.parametrize("elem_id", ADMIN_CONTROLS)
def test_admin_actions_are_in_admin_areas(demo, elem_id):
    assert all(is_admin_only(demo, f) for f in triggered_by(demo, by_id(demo, elem_id)))


@pytest.mark.parametrize("elem_id", MEMBER_CONTROLS)
def test_member_actions_are_not(demo, elem_id):
    assert not any(is_admin_only(demo, f) for f in triggered_by(demo, by_id(demo, elem_id)))


def test_functions_chained_after_an_admin_action_are_admin_only(demo):
    switch = [f for f in demo.fns.values() if f.api_name == "switch_model"]
    assert switch and switch[0].targets == [(None, "then")] and is_admin_only(demo, switch[0])


def test_no_function_has_both_an_admin_trigger_and_a_member_trigger(demo):
    for f in demo.fns.values():
        places = {in_admin_area(demo.blocks[t[0]]) for t in f.targets if t[0] in demo.blocks}
        assert len(places) <= 1, f.name


def test_a_members_page_hides_every_admin_area_at_load_and_an_admins_keeps_them(demo):
    areas = admin_areas(demo)
    names = {getattr(a, "elem_id", None) or getattr(a, "label", None) for a in areas}
    assert {"training-tab", "Settings", "account-admin", "register-accordion", "ab-create-accordion",
            "quick-ab"} <= names
    hide = [f for f in demo.fns.values() if f.name == "hide"]
    assert len(hide) == 1 and hide[0].outputs == areas and hide[0].api_visibility == "private"
    hidden = [{"__type__": "update", "visible": "hidden" if isinstance(a, gr.Tab) else False} for a in areas]
    assert hide[0].fn(as_page(MEMBER)) == hidden
    assert hide[0].fn(as_page(ADMIN)) == [gr.skip()] * len(areas)


def test_nothing_a_members_page_runs_by_itself_sets_off_an_admin_areas_events(demo):
    """Loads and ticks (member-level functions) may fill an admin area, but then skip on a member's page wherever
    an admin-only change listener would fire; and every timer in an admin area starts stopped."""
    listened = {t[0] for f in demo.fns.values() if is_admin_only(demo, f) for t in f.targets if t[1] == "change"}
    fillers = [f for f in demo.fns.values() if not is_admin_only(demo, f)
               and any(o._id in listened for o in f.outputs)]
    assert {f.name for f in fillers} == {"show_loaded", "show_admin"}, [f.name for f in fillers]
    for f in fillers:
        args = [getattr(i, "value", None) for i in f.inputs]
        assert f.fn(*args, request=as_page(MEMBER)) == [gr.skip()] * len(f.outputs), f.name
        shown = f.fn(*args, request=as_page(ADMIN))
        assert not all(isinstance(x, dict) and x == gr.skip() for x in shown), f.name
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer) and in_admin_area(b)]
    assert timers and not any(t.active for t in timers)


def test_a_training_run_link_does_not_open_the_training_tab_for_a_member(make_module_ctx, demo):
    open_run = [f for f in demo.fns.values() if f.name == "open_run"][0]
    request = gr.Request(request=Request({"type": "http", "headers": [], "path": "/", "query_string": b"run=1",
                                          "state": {"actor": MEMBER}}))
    assert open_run.fn(request) == [gr.skip()] * len(open_run.outputs)
