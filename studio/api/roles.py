"""Which role every operation needs: one declared table for the REST API and the page's named Gradio endpoints, and
the rule for the page's other (private) functions. The auth middleware (auth.py) enforces it before any route runs.

admin: models, adapters, generation settings, training, datasets, evaluation runs, creating and running A/B tests,
users and other people's tokens. member: generating, their own jobs, uploads for generation, ratings, A/B listening
and votes, the lists a person needs to generate, their own account and tokens. An operation missing from the table
is admin-only (default deny): tests/api/test_roles.py fails when the table and /openapi.json differ.

Private Gradio functions (the page's own wiring, called by fn_index) are admin-only when one of their triggers sits
inside a block marked with the `admin-only` CSS class (`elem_classes`, on the block or any block around it), else
member: the page marks its admin areas once, and every event wired inside them follows.
"""
from __future__ import annotations

import json
import re
from typing import Iterable

from studio.page_areas import ADMIN_ONLY, in_admin_area, trigger_blocks  # noqa: F401 - ADMIN_ONLY for tests
from studio.users import Role


# (METHOD, path template as in /openapi.json) -> the role it needs.
REST_ROLES: dict[tuple[str, str], Role] = {
    # Your own account: every signed-in person. Users are the admins' (their service refuses the rest too).
    ("GET", "/api/me"): "member",
    ("PUT", "/api/me/password"): "member",
    ("POST", "/api/me/logout-everywhere"): "member",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("PATCH", "/api/users/{name}"): "admin",
    # Tokens: one's own (`?all=true` and other people's tokens: admins, checked by the service).
    ("GET", "/api/tokens"): "member",
    ("POST", "/api/tokens"): "member",
    ("DELETE", "/api/tokens/{token_id}"): "member",
    # Models: members read what they generate with; adding, removing, importing and switching are the admins'
    # (a switch stops everyone's generation for a while).
    ("GET", "/api/models"): "member",
    ("GET", "/api/models/current"): "member",
    ("GET", "/api/models/{model_id}"): "member",
    ("POST", "/api/models/current"): "admin",
    ("POST", "/api/models"): "admin",
    ("DELETE", "/api/models/{model_id}"): "admin",
    ("POST", "/api/models/inspect"): "admin",  # only useful before adding a model; it reads server folders
    ("GET", "/api/models/import"): "admin",  # the imports' progress: admin work
    ("POST", "/api/models/import"): "admin",
    # Generation settings: members read them (the Generate form starts from them); saving, resetting and the
    # change history (an audit of admin actions) are the admins'.
    ("GET", "/api/models/{model_id}/config"): "member",
    ("GET", "/api/models/{model_id}/config/schema"): "member",
    ("PUT", "/api/models/{model_id}/config"): "admin",
    ("POST", "/api/models/{model_id}/config/reset"): "admin",
    ("GET", "/api/models/{model_id}/config/history"): "admin",
    # Generation and jobs: everyone's work; the job service limits a member to their own jobs.
    ("POST", "/api/generate"): "member",
    ("POST", "/api/generate/cancel"): "member",
    ("POST", "/api/jobs"): "member",
    ("GET", "/api/jobs"): "member",
    ("GET", "/api/queue"): "member",
    ("GET", "/api/jobs/{job_id}"): "member",
    ("DELETE", "/api/jobs/{job_id}"): "member",
    ("GET", "/api/jobs/{job_id}/events"): "member",
    ("POST", "/api/jobs/{job_id}/cancel"): "member",
    ("POST", "/api/jobs/{job_id}/resubmit"): "member",
    ("GET", "/api/jobs/{job_id}/audio"): "member",
    ("GET", "/api/jobs/{job_id}/rating"): "member",
    ("PUT", "/api/jobs/{job_id}/rating"): "member",
    ("DELETE", "/api/jobs/{job_id}/rating"): "member",
    ("POST", "/api/jobs/{job_id}/score"): "member",  # scoring one's own take (the evaluation model is chosen)
    # Uploads for generation (melodies, continuations).
    ("POST", "/api/uploads"): "member",
    ("GET", "/api/uploads/{upload_id}"): "member",
    ("GET", "/api/uploads/{upload_id}/audio"): "member",
    # Adapters: members read the list, versions and their performance to choose one; every change is the admins'.
    ("GET", "/api/adapters"): "member",
    ("GET", "/api/adapters/{adapter_id}"): "member",
    ("GET", "/api/adapters/timeline"): "member",
    ("GET", "/api/adapters/compare"): "member",
    ("GET", "/api/adapters/{adapter_id}/performance"): "member",
    ("GET", "/api/adapters/{adapter_id}/changes"): "member",  # who changed a version: readable like the version
    ("POST", "/api/adapters"): "admin",
    ("PATCH", "/api/adapters/{adapter_id}"): "admin",
    ("DELETE", "/api/adapters/{adapter_id}"): "admin",
    ("POST", "/api/adapters/{adapter_id}/restore"): "admin",
    # Evaluation: the model list is a harmless read; choosing the model and evaluation runs (and their reports,
    # which only the people who run them need) are the admins'.
    ("GET", "/api/evaluation/models"): "member",
    ("POST", "/api/evaluation/models/current"): "admin",
    ("POST", "/api/evaluations"): "admin",
    ("GET", "/api/evaluations"): "admin",
    ("GET", "/api/evaluations/{evaluation_id}"): "admin",
    ("GET", "/api/evaluations/{evaluation_id}/compare/{other_id}"): "admin",
    ("POST", "/api/evaluations/{evaluation_id}/cancel"): "admin",
    # A/B tests: members list them, listen and vote (results stay hidden until an admin closes a test, so the
    # test view is safe to read); creating, closing, cancelling, resuming and deleting are the admins'.
    ("GET", "/api/abtests"): "member",
    ("GET", "/api/abtests/{test_id}"): "member",
    ("GET", "/api/abtests/{test_id}/next"): "member",
    ("GET", "/api/abtests/{test_id}/pairs/{pair}/{slot}"): "member",
    ("POST", "/api/abtests/{test_id}/votes"): "member",
    ("POST", "/api/abtests"): "admin",
    ("POST", "/api/abtests/{test_id}/close"): "admin",
    ("POST", "/api/abtests/{test_id}/cancel"): "admin",
    ("POST", "/api/abtests/{test_id}/resume"): "admin",
    ("DELETE", "/api/abtests/{test_id}"): "admin",
    # Datasets and training: all admin work, reads included (training material and runs are not what a member
    # needs to generate).
    ("GET", "/api/datasets"): "admin",
    ("POST", "/api/datasets"): "admin",
    ("GET", "/api/datasets/{dataset_id}"): "admin",
    ("DELETE", "/api/datasets/{dataset_id}"): "admin",
    ("GET", "/api/datasets/{dataset_id}/clips"): "admin",
    ("PATCH", "/api/datasets/{dataset_id}/clips"): "admin",
    ("GET", "/api/datasets/{dataset_id}/clips/{clip_id}/audio"): "admin",
    ("GET", "/api/training/config/schema"): "admin",
    ("POST", "/api/training/runs"): "admin",
    ("GET", "/api/training/runs"): "admin",
    ("GET", "/api/training/runs/{run_id}"): "admin",
    ("GET", "/api/training/runs/{run_id}/events"): "admin",
    ("POST", "/api/training/runs/{run_id}/stop"): "admin",
    ("POST", "/api/training/runs/{run_id}/resume"): "admin",
    ("POST", "/api/training/runs/{run_id}/register"): "admin",
}

# The page's named Gradio endpoints (api_name, for gradio_client) -> the role they need. Same groups as above.
GRADIO_ROLES: dict[str, Role] = {
    # generation: everyone
    "generate": "member",
    "submit_job": "member",
    "cancel_job": "member",
    # adapter performance: a read
    "compare_versions": "member",
    # adapters, models, settings, evaluation model: admins
    "register_adapter": "admin",
    "restore_adapter": "admin",
    "switch_model": "admin",
    "generation_settings": "member",  # reads the saved settings (what the Generate form starts from)
    "save_generation_settings": "admin",
    "reset_generation_settings": "admin",
    "inspect_model_on_page": "admin",
    "add_model_on_page": "admin",
    "remove_model_on_page": "admin",
    "import_audiocraft": "admin",
    "use_evaluation_model": "admin",
    # datasets and training: admins
    "create_dataset": "admin",
    "delete_dataset": "admin",
    "edit_dataset_clips": "admin",
    "save_dataset_grid": "admin",
    "start_training_run": "admin",
    "training_run": "admin",
    "stop_training_run": "admin",
    "resume_training_run": "admin",
    "register_training_checkpoint": "admin",
}

RANK: dict[Role, int] = {"member": 0, "admin": 1}


def strictest(roles: Iterable[Role]) -> Role:
    return max(roles, key=RANK.__getitem__, default="member")


def rest_role(method: str, template: str) -> Role:
    """The role a REST operation needs: from the table, admin when it is missing (default deny)."""
    return REST_ROLES.get((method.upper(), template), "admin")


class RestRoles:
    """Which operations a request can reach, from the app's own /openapi.json paths (what the table and its test
    speak of). A concrete path may fit several templates (`/api/models/import` also fits `/api/models/{model_id}`):
    the strictest of their roles applies, so no order of the routers can let a member through to an admin route."""

    def __init__(self, paths: dict[str, dict]) -> None:
        self._operations = [(re.compile("^" + re.sub(r"\\{[^}:]+(:path)?\\}",
                                                      lambda m: ".*" if m.group(1) else "[^/]+",
                                                      re.escape(template)) + "$"),
                             method.upper(), template)
                            for template, operations in paths.items() for method in operations]

    def role(self, method: str, path: str) -> Role:
        """A path and method no operation takes (404, 405) needs no more than a login."""
        method = "GET" if method == "HEAD" else method
        return strictest(rest_role(method, template) for pattern, op_method, template in self._operations
                         if op_method == method and pattern.match(path))


# ---- the page's functions ------------------------------------------------------------------------------------------
def _value_loaders(blocks) -> dict[int, object]:
    """Functions Gradio made for components whose value is a function, with their component: Gradio gives them a
    public api_name like 'lambda_3' that says nothing, so they follow the private functions' rule, the component
    counting as their trigger (what they read is what that component shows)."""
    loaders = {}
    for block in blocks.blocks.values():
        event = getattr(block, "load_event", None)
        if isinstance(event, dict) and isinstance(event.get("id"), int):
            loaders[event["id"]] = block
    return loaders


def is_named(fn, loaders: dict[int, object]) -> bool:
    """A function scripts call by name (/gradio_api/info lists it): public or undocumented, not a value loader."""
    return fn.fn is not None and fn.api_visibility != "private" and fn._id not in loaders


def named_endpoints(blocks) -> list[str]:
    loaders = _value_loaders(blocks)
    return sorted({fn.api_name for fn in blocks.fns.values() if is_named(fn, loaders) and fn.api_name})


class GradioRoles:
    """The role of every function of one Blocks, worked out once when the page is built."""

    def __init__(self, blocks, named: dict[str, Role] | None = None) -> None:
        named = GRADIO_ROLES if named is None else named
        loaders = _value_loaders(blocks)
        self.by_fn: dict[int, Role] = {}
        self.by_name: dict[str, int] = {}
        self.by_component: dict[int, Role] = {}
        for fn_id, fn in blocks.fns.items():
            if is_named(fn, loaders):
                role = named.get(fn.api_name, "admin")  # a named endpoint missing from the table: admins only
            else:
                triggers = [*trigger_blocks(blocks, fn), *([loaders[fn_id]] if fn_id in loaders else [])]
                role = "admin" if any(in_admin_area(b) for b in triggers) else "member"
            self.by_fn[fn_id] = role
            if fn.api_name and fn.api_name not in self.by_name:  # Gradio takes the first of a name, too
                self.by_name[fn.api_name] = fn_id
        for block_id, block in blocks.blocks.items():
            self.by_component[block_id] = "admin" if in_admin_area(block) else "member"

    def fn_role(self, fn_index: object) -> Role:
        """Unknown functions (a made-up index): admins only."""
        return self.by_fn.get(fn_index, "admin") if isinstance(fn_index, int) else "admin"

    def name_role(self, api_name: str) -> Role:
        fn_id = self.by_name.get(api_name)
        return self.by_fn[fn_id] if fn_id is not None else "admin"

    def component_role(self, component_id: object) -> Role:
        return self.by_component.get(component_id, "admin") if isinstance(component_id, int) else "admin"

    # ---- which function a request to Gradio's routes runs ---------------------------------------------------------
    def request_role(self, path: str, body: bytes) -> Role | None:
        """The role a request to one of Gradio's routes that run a function needs, read as Gradio reads it (its own
        body models); None: this route runs no function of the page (any signed-in person)."""
        for pattern, kind in GRADIO_RUN_ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if kind == "named":  # /call/{api_name}: the function is the name's, whatever the body says
                return self.name_role(match["api_name"])
            data = _json(body)
            if kind == "component":
                return self.component_role(data.get("component_id") if isinstance(data, dict) else None)
            fn_index = _fn_index(data)
            if kind == "join":
                return self.fn_role(fn_index) if fn_index is not None else None  # Gradio refuses it: no fn
            # /run/{api_name}, /api/{api_name}: a fn_index in the body is what runs, the name then ignored
            # (route_utils.get_fn); the page's own queue=False events post to /run/predict that way
            return self.fn_role(fn_index) if fn_index is not None else self.name_role(match["api_name"])
        return None


# Gradio 6.31's routes that run one of the page's functions (gradio/routes.py); `call/v2` before `call/{name}`.
GRADIO_RUN_ROUTES = [
    (re.compile(r"^/gradio_api/queue/join/?$"), "join"),
    (re.compile(r"^/gradio_api/call/v2/(?P<api_name>[^/]+)/?$"), "named"),
    (re.compile(r"^/gradio_api/call/(?P<api_name>[^/]+)/?$"), "named"),
    (re.compile(r"^/gradio_api/(?:run|api)/(?P<api_name>[^/]+)/?$"), "named_or_index"),
    (re.compile(r"^/gradio_api/component_server/?$"), "component"),
]


def runs_a_function(path: str) -> bool:
    return any(pattern.match(path) for pattern, _kind in GRADIO_RUN_ROUTES)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # not JSON (e.g. a multipart component call): no function can be told, so admins only


def _fn_index(data: object) -> object:
    """The fn_index Gradio will use: pydantic's lax int (so "3" is 3, true is 1 ...), through Gradio's own model."""
    from gradio.data_classes import PredictBody
    from pydantic import ValidationError

    if not isinstance(data, dict):
        return None
    try:
        return PredictBody.model_validate(data).fn_index
    except ValidationError:
        return None  # Gradio refuses the same body (422): nothing runs
