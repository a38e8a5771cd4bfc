"""Adapter strength and stacks through the studio: requests refused with a code before anything is recorded, the
job's record of its stack (GET /api/jobs/{id}), what a stack sounds like vs its parts, running it again."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from studio.services.adapters import AdapterUpdate, RegisterAdapterRequest
from studio.services.generation import GenerateRequest, JobRequest, StackedAdapter
from tests.adapters_factory import make_lora
from tests.conftest import rest_client


@pytest.fixture(scope="module")
def studio(make_module_ctx, tiny_folder):
    """studio-tiny loaded, adapters a, b, c, d for it, one for another model, one inactive, one deleted."""
    ctx = make_module_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    imports = ctx.settings.data_dir / "imports"
    ids = {}
    for seed, name in enumerate(["a", "b", "c", "d", "inactive", "deleted"]):
        make_lora(tiny_folder, imports / name, base_name="studio-tiny", seed=seed + 1)
        ids[name] = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=name)).id
    make_lora(tiny_folder, imports / "other", base_name="test-org/tiny-musicgen", seed=9)
    ids["other"] = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="other")).id
    ctx.adapters.update(ids["inactive"], AdapterUpdate(active=False))
    ctx.adapters.delete(ids["deleted"])
    with rest_client(ctx) as client:
        client.ctx, client.ids = ctx, ids
        yield client


def _body(**fields):
    return {"prompt": "warm synth", "duration_s": 0.5, "seed": 4, **fields}


REFUSALS = [
    # (case, request fields (names: adapter ids), status, code, field)
    ("adapter_id and adapters", lambda i: {"adapter_id": i["a"], "adapters": [{"adapter_id": i["b"]}]}, 422,
     "adapters_exclusive", "adapters"),
    ("adapter_strength beside a stack", lambda i: {"adapter_strength": 0.5, "adapters": [{"adapter_id": i["b"]}]},
     422, "adapters_exclusive", "adapter_strength"),
    ("strength without an adapter", lambda i: {"adapter_strength": 0.5}, 422, "strength_without_adapter",
     "adapter_strength"),
    ("strength over 2", lambda i: {"adapter_id": i["a"], "adapter_strength": 2.01}, 422, "invalid_strength",
     "adapter_strength"),
    ("negative strength", lambda i: {"adapter_id": i["a"], "adapter_strength": -0.1}, 422, "invalid_strength",
     "adapter_strength"),
    ("stack strength over 2", lambda i: {"adapters": [{"adapter_id": i["a"]}, {"adapter_id": i["b"], "strength": 3}]},
     422, "invalid_strength", "adapters"),
    ("four adapters", lambda i: {"adapters": [{"adapter_id": i[n]} for n in "abcd"]}, 422, "too_many_adapters",
     "adapters"),
    ("the same adapter twice", lambda i: {"adapters": [{"adapter_id": i["a"]}, {"adapter_id": i["a"],
                                                                                "strength": 0.5}]},
     422, "duplicate_adapter", "adapters"),
    ("strength as text", lambda i: {"adapter_id": i["a"], "adapter_strength": "1"}, 422, "invalid_body",
     "adapter_strength"),
    ("strength NaN", lambda i: {"adapter_id": i["a"], "adapter_strength": float("nan")}, 422, "invalid_body",
     "adapter_strength"),
    ("stack entry with a stray field", lambda i: {"adapters": [{"adapter_id": i["a"], "weight": 1}]}, 422,
     "invalid_body", "adapters"),
    ("an adapter of another model in the stack", lambda i: {"adapters": [{"adapter_id": i["a"]},
                                                                         {"adapter_id": i["other"]}]},
     409, "adapter_incompatible", None),
    ("an inactive adapter in the stack", lambda i: {"adapters": [{"adapter_id": i["inactive"]}]}, 400,
     "adapter_inactive", None),
    ("a deleted adapter in the stack", lambda i: {"adapters": [{"adapter_id": i["a"]}, {"adapter_id": i["deleted"]}]},
     400, "adapter_deleted", None),
    ("an unknown adapter in the stack", lambda i: {"adapters": [{"adapter_id": 999999}]}, 404, "adapter_not_found",
     None),
]


@pytest.mark.parametrize("fields,status,code,field", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_stack_refusals_have_a_code_and_record_nothing(studio, fields, status, code, field):
    before = studio.get("/api/jobs").json()
    body = json.dumps(_body(**fields(studio.ids)), allow_nan=True)
    for route in ("/api/generate", "/api/jobs"):
        r = studio.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        assert detail["code"] == code and detail["message"], detail
        if field is not None:
            assert field in [e["field"].split(".")[0].split("[")[0] for e in detail["errors"]], detail
    assert studio.get("/api/jobs").json() == before  # nothing recorded


def _audio(ctx, result) -> np.ndarray:
    return sf.read(result.output_file)[0]


def test_a_stack_is_recorded_shown_and_run_again(studio):
    ctx, ids = studio.ctx, studio.ids
    gen = ctx.generation
    stack = [StackedAdapter(adapter_id=ids["a"], strength=0.5), StackedAdapter(adapter_id=ids["b"], strength=1.5)]
    result = gen.generate(GenerateRequest(prompt="warm synth", duration_s=0.5, seed=4, adapters=stack))
    assert [(s.label, s.strength) for s in result.adapter_stack] == [("a v1", 0.5), ("b v1", 1.5)]
    assert result.adapter_id == ids["a"]  # the first of the stack: History's adapter filter finds it
    info = studio.get(f"/api/jobs/{result.job_id}").json()
    assert info["adapter_stack"] == [
        {"adapter_id": ids["a"], "label": "a v1", "strength": 0.5, "deleted": False},
        {"adapter_id": ids["b"], "label": "b v1", "strength": 1.5, "deleted": False}]
    # the stack sounds like neither adapter alone nor the base (same seed)
    base = gen.generate(GenerateRequest(prompt="warm synth", duration_s=0.5, seed=4))
    alone = gen.generate(GenerateRequest(prompt="warm synth", duration_s=0.5, seed=4, adapter_id=ids["a"]))
    assert studio.get(f"/api/jobs/{alone.job_id}").json()["adapter_stack"] is None  # one at 1: adapter_id says it
    for other in (base, alone):
        assert not np.array_equal(_audio(ctx, result), _audio(ctx, other))
    # running it again gives the same stack, the same audio
    again = gen.wait(gen.resubmit(result.job_id).job_id)
    assert [(s.adapter_id, s.strength) for s in again.adapter_stack] == [(ids["a"], 0.5), (ids["b"], 1.5)]
    assert np.array_equal(_audio(ctx, again), _audio(ctx, result))
    # the base is unchanged after the stack (bit for bit)
    base_again = gen.generate(GenerateRequest(prompt="warm synth", duration_s=0.5, seed=4))
    assert np.array_equal(_audio(ctx, base_again), _audio(ctx, base))


def test_strength_of_one_adapter(studio):
    ctx, ids = studio.ctx, studio.ids
    gen = ctx.generation

    def make(**fields):
        return gen.generate(GenerateRequest(prompt="warm synth", duration_s=0.5, seed=4, **fields))

    base, zero = make(), make(adapter_id=ids["c"], adapter_strength=0.0)
    one, two = make(adapter_id=ids["c"]), make(adapter_id=ids["c"], adapter_strength=2.0)
    assert np.array_equal(_audio(ctx, zero), _audio(ctx, base))  # strength 0: the base model's output
    assert not np.array_equal(_audio(ctx, two), _audio(ctx, one))
    info = studio.get(f"/api/jobs/{two.job_id}").json()
    assert info["adapter_id"] == ids["c"]
    assert info["adapter_stack"] == [{"adapter_id": ids["c"], "label": "c v1", "strength": 2.0, "deleted": False}]
    rerun = gen.wait(gen.resubmit(two.job_id).job_id)
    assert np.array_equal(_audio(ctx, rerun), _audio(ctx, two))


def test_takes_of_a_stack_and_plain_jobs_batch_by_stack(studio):
    """Takes of one stack decode together; a job with another stack waits for its own batch."""
    ctx, ids = studio.ctx, studio.ids
    gen = ctx.generation
    stack = [StackedAdapter(adapter_id=ids["a"], strength=0.5), StackedAdapter(adapter_id=ids["d"], strength=1.0)]
    first = gen.submit(JobRequest(prompt="x", duration_s=2.0, seed=1, variations=2, adapters=stack))
    second = gen.submit(JobRequest(prompt="x", duration_s=0.5, seed=1, variations=2, adapter_id=ids["b"],
                                   adapter_strength=0.7))
    plain = gen.submit(JobRequest(prompt="x", duration_s=0.5, seed=1, variations=2, adapter_id=ids["b"]))
    results = [gen.wait(j) for a in (first, second, plain) for j in a.job_ids]
    assert [r.batch_size for r in results] == [2, 2, 2, 2, 2, 2]
