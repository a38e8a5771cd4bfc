"""An adapter version's change log (issue 14): every change says who made it and what changed (old -> new),
recorded with the change itself, newest first; a rename is logged on every version it moved."""
from __future__ import annotations

import pytest

from studio.errors import NotFound
from studio.services.adapters import AdapterUpdate, Provenance, RegisterAdapterRequest
from tests.adapters_factory import make_lora


@pytest.fixture(scope="module")
def studio(make_module_ctx, tiny_folder, tmp_path_factory):
    imports = tmp_path_factory.mktemp("imports")
    make_lora(tiny_folder, imports / "lora")
    ctx = make_module_ctx(import_roots=(imports,))
    ctx.lora = imports / "lora"
    return ctx


def log(ctx, adapter_id) -> list[tuple[str, str, dict]]:
    return [(c.action, c.changed_by, c.details) for c in ctx.adapters.changes(adapter_id)]


def test_every_change_is_logged_with_who_and_what_newest_first(studio):
    ctx = studio
    register = RegisterAdapterRequest(source="folder", path="lora", name="lofi", description="first",
                                      allow_duplicate=True)
    v1 = ctx.adapters.register(register, user="ann")
    v2 = ctx.adapters.register(register, user="ben")
    ctx.adapters.update(v1.id, AdapterUpdate(description="warmer"), "ben")
    ctx.adapters.update(v1.id, AdapterUpdate(description="warmer", active=True), "ann")  # changes nothing: no entry
    ctx.adapters.update(v1.id, AdapterUpdate(active=False), "ann")
    ctx.adapters.update(v1.id, AdapterUpdate(active=True), "ben")
    ctx.adapters.update(v2.id, AdapterUpdate(name="chill"), "ann")  # every version moves
    ctx.adapters.delete(v1.id, "ben")
    ctx.adapters.restore(v1.id, "ann")
    assert log(ctx, v1.id) == [
        ("restored", "ann", {}), ("deleted", "ben", {}), ("renamed", "ann", {"name": ["lofi", "chill"]}),
        ("activated", "ben", {"active": [False, True]}), ("deactivated", "ann", {"active": [True, False]}),
        ("described", "ben", {"description": ["first", "warmer"]}),
        ("registered", "ann", {"source": f"folder:{ctx.lora}", "label": "lofi v1"})]
    assert log(ctx, v2.id) == [("renamed", "ann", {"name": ["lofi", "chill"]}),
                               ("registered", "ben", {"source": f"folder:{ctx.lora}", "label": "lofi v2"})]


def test_a_training_checkpoint_registration_names_its_run_and_step(studio):
    ctx = studio
    info = ctx.adapters.register_checkpoint(ctx.lora, name="trained", description="", base_model="studio-tiny",
                                            provenance=Provenance(training_run_id="7"), user="ann", step=3)
    assert log(ctx, info.id) == [("registered", "ann", {"source": "training:run 7", "label": "trained v1",
                                                        "run_id": 7, "step": 3})]


def test_a_deleted_versions_log_stays_readable_and_an_unknown_one_is_not_found(studio):
    ctx = studio
    info = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="lora", name="gone",
                                                        allow_duplicate=True))
    ctx.adapters.delete(info.id)
    assert [(a, who) for a, who, _ in log(ctx, info.id)] == [("deleted", "local"), ("registered", "local")]
    with pytest.raises(NotFound) as err:
        ctx.adapters.changes(999_999)
    assert err.value.code == "adapter_not_found"
