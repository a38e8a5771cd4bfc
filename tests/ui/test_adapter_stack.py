"""The Generate tab's adapter strength and "Stack adapters": what the page sends, and the same through
gradio_client (the /generate and /submit_job endpoints take strength and the stack's slots)."""
from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio.services.jobs import StackItem
from studio.ui.adapter_stack import adapter_value, request_fields, reuse_updates, stack_cells, stack_text
from studio.ui.common import NO_ADAPTER
from studio.ui.generate_tab import adapter_id_from
from tests.live import serve


def _resolve(value):
    return adapter_id_from(value)


FIELDS = [
    # (case, adapter id, its strength, the stack's slots, the request's adapter fields)
    ("the base model", None, 1.0, [NO_ADAPTER, 1.0] * 3, {}),
    ("the base model, strength left moved", None, 0.3, [NO_ADAPTER, 1.0] * 3, {}),
    ("one adapter", 4, 1.0, [NO_ADAPTER, 1.0] * 3, {"adapter_id": 4, "adapter_strength": 1.0}),
    ("one adapter at 0.4", 4, 0.4, [NO_ADAPTER, 1.0] * 3, {"adapter_id": 4, "adapter_strength": 0.4}),
    ("a stack with a gap", None, 1.0, ["4", 0.5, NO_ADAPTER, 1.0, "7", 2],
     {"adapters": [{"adapter_id": 4, "strength": 0.5}, {"adapter_id": 7, "strength": 2.0}]}),
    ("scripts leave slots out", None, 1.0, [None, None, "3", None, None, None],
     {"adapters": [{"adapter_id": 3, "strength": 1.0}]}),
]


@pytest.mark.parametrize("adapter_id,strength,slots,want", [f[1:] for f in FIELDS], ids=[f[0] for f in FIELDS])
def test_the_page_sends_one_adapter_or_a_stack(adapter_id, strength, slots, want):
    assert request_fields(adapter_id, strength, slots, _resolve) == want


def test_an_adapter_and_a_stack_together_are_refused_in_words():
    with pytest.raises(gr.Error, match="either one adapter"):
        request_fields(4, 1.0, ["5", 1.0, NO_ADAPTER, 1.0, NO_ADAPTER, 1.0], _resolve)
    with pytest.raises(gr.Error, match="Strength 1 must be a number"):
        request_fields(None, 1.0, ["5", "lots", NO_ADAPTER, 1.0, NO_ADAPTER, 1.0], _resolve)


def test_history_shows_and_reuses_a_stack():
    stack = [StackItem(adapter_id=4, label="lofi_piano v1", strength=0.5),
             StackItem(adapter_id=7, label="drums v2", strength=1.5, deleted=True)]
    assert stack_cells(stack) == "lofi_piano v1 (0.5) + ⚠ drums v2 (1.5)"
    assert stack_text(stack) == r"**lofi\_piano v1** at 0.5 + **drums v2** (deleted) at 1.5"  # user text escaped
    assert adapter_value(stack, 4) == NO_ADAPTER  # a stack goes to the stack's slots, not the Adapter list
    strength, a1, s1, a2, s2, a3, s3 = reuse_updates(stack, 4, [(NO_ADAPTER, NO_ADAPTER), ("lofi_piano v1", "4")])
    assert (a1.value, s1.value, a2.value, s2.value, a3.value) == ("4", 0.5, "7", 1.5, NO_ADAPTER)
    assert strength.visible is False
    single = [StackItem(adapter_id=4, label="lofi v1", strength=0.25)]
    assert adapter_value(single, 4) == "4"
    strength, a1, *_ = reuse_updates(single, 4, [])
    assert strength.value == 0.25 and strength.visible is True and a1.value == NO_ADAPTER


@pytest.fixture(scope="module")
def served(make_module_ctx, tiny_folder):
    from studio.services.adapters import RegisterAdapterRequest
    from tests.adapters_factory import make_lora

    ctx = make_module_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    imports = ctx.settings.data_dir / "imports"
    ids = []
    for seed, name in enumerate(["lofi", "drums"]):
        make_lora(tiny_folder, imports / name, base_name="studio-tiny", seed=seed + 1)
        ids.append(ctx.adapters.register(RegisterAdapterRequest(source="folder", path=name)).id)
    with serve(ctx) as url:
        yield ctx, Client(url, verbose=False), ids


def test_scripts_generate_with_a_strength_and_a_stack(served):
    ctx, client, (lofi, drums) = served
    common = dict(prompt="warm synth", duration_s=0.5, seed=3, top_k=250, top_p=0.0, temperature=1.0,
                  guidance_scale=3.0)
    _, info = client.predict(**common, adapter=str(lofi), strength=0.5, api_name="/generate")
    assert "adapter **lofi v1** at 0.5" in info, info
    _, info = client.predict(**common, adapter=NO_ADAPTER, stack1="lofi v1", strength1=0.5, stack2=str(drums),
                             strength2=1.5, api_name="/generate")
    assert "adapters **lofi v1** at 0.5 + **drums v1** at 1.5" in info, info
    accepted = client.predict(**common, adapter=NO_ADAPTER, takes=2, stack1=str(drums), strength1=2.0,
                              api_name="/submit_job")
    job = ctx.jobs.get(accepted["job_ids"][1])
    assert [(s.adapter_id, s.strength) for s in job.adapter_stack] == [(drums, 2.0)]
    with pytest.raises(AppError, match="in the stack twice"):
        client.predict(**common, adapter=NO_ADAPTER, stack1=str(lofi), stack2=str(lofi), api_name="/generate")
    with pytest.raises(AppError, match="either one adapter"):
        client.predict(**common, adapter=str(lofi), stack1=str(drums), api_name="/generate")


@pytest.mark.parametrize("value,said", [(1.0, None), (0, None), (2, None), (2.5, "2.5 is out of range"),
                                        (-1, "-1 is out of range"), ("x", "must be a number"), (None, None)])
def test_a_typed_strength_is_checked_in_the_studios_words(value, said):
    from studio.ui.adapter_stack import strength_problem

    problem = strength_problem(value)
    assert (problem is None) == (said is None) and (said is None or said in problem)
