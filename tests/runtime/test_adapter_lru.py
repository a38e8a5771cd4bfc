"""The loaded model keeps a bounded set of adapters: least recently used out first (PEFT delete_adapter), never
the one in use; an evicted adapter loads again on its next use."""
from __future__ import annotations

import pytest

from tests import adapters_factory as factory


@pytest.fixture(scope="module")
def loras(tmp_path_factory, tiny_folder):
    root = tmp_path_factory.mktemp("lru")
    return [factory.make_lora(tiny_folder, root / f"lora-{i}", seed=i) for i in range(4)]


def test_least_recently_used_adapters_are_unloaded(ctx, loras):
    with ctx.manager.use("test") as model:
        model.max_adapters = 2
        model.activate_adapter("a0", loras[0])
        model.activate_adapter("a1", loras[1])
        model.activate_adapter("a0", loras[0])  # a0 used again: a1 is now the least recently used
        model.activate_adapter("a2", loras[2])
        assert list(model.adapters) == ["a0", "a2"]
        assert set(model.model.peft_config) == {"a0", "a2"}  # really deleted from the model, not just forgotten
        model.activate_adapter(None)
        model.activate_adapter("a1", loras[1])  # evicted earlier: loads again
        assert list(model.adapters) == ["a2", "a1"] and model.active_adapter == "a1"


def test_a_bytes_cap_never_unloads_the_adapter_in_use(ctx, loras):
    with ctx.manager.use("test") as model:
        model.max_adapter_bytes = 1  # every adapter is over: only the one in use stays
        for i, folder in enumerate(loras):
            model.activate_adapter(f"a{i}", folder)
            assert list(model.adapters) == [f"a{i}"] and model.active_adapter == f"a{i}"
        assert set(model.model.peft_config) == {"a3"}
