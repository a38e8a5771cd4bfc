"""Work after a switch: listeners run only when a model was really loaded, and the studio is free before the client
hears 'ready' (nothing takes it afterwards)."""
from __future__ import annotations

from tests.conftest import registry_dict


def test_listeners_run_after_a_real_load_only(make_ctx):
    ctx = make_ctx(registry_dict(**{"tiny-b": {}}))
    calls = []
    ctx.manager.on_model_loaded(lambda: calls.append(ctx.manager.spec.id))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"  # already loaded: a no-op
    assert ctx.manager.switch_and_wait("tiny-b").stage == "ready"
    assert calls == ["studio-tiny", "tiny-b"]


def test_discarded_adapters_leave_at_the_next_use_without_taking_the_studio(ctx):
    with ctx.manager.use("test") as model:
        model.adapters["adapter_9"] = None  # stands for a loaded adapter
        unloaded = []
        model.unload_adapter = lambda key: (unloaded.append(key), model.adapters.pop(key, None))
    ctx.manager.discard_adapter("adapter_9")
    assert ctx.manager.status().state == "idle"  # discarding never makes the studio busy
    with ctx.manager.use("test") as model:
        assert unloaded == ["adapter_9"] and "adapter_9" not in model.adapters
