"""Adapter strength and stacks in the backend (studio/runtime/stacks.py): PEFT's scaling and multi-adapter
activation, no merge. The base model's output is bit-identical after any stack; strength 0 is the base, strength 1
the adapter alone; a stack equals a base whose weights carry the sum of the scaled LoRA deltas."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio.errors import Incompatible
from studio.registry import parse_registry
from studio.runtime.backend import DecodeHooks, Row, SamplingParams
from studio.runtime.decode import decode_batch
from studio.runtime.stacks import batch_key
from studio.runtime.transformers_backend import TransformersBackend
from tests import adapters_factory as factory
from tests.conftest import registry_dict

GREEDY = SamplingParams(do_sample=False, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
SAMPLE = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
FRAMES = 20
NAMES = ("A", "B", "C")


@pytest.fixture(scope="module")
def spec():
    return parse_registry(registry_dict()).get("studio-tiny")


@pytest.fixture(scope="module")
def loras(tmp_path_factory, tiny_folder):
    root = tmp_path_factory.mktemp("stacks")
    # different ranks and alphas: the scaling (alpha / r) differs per adapter
    shapes = {"A": (4, 8), "B": (2, 8), "C": (8, 4)}
    return {name: factory.make_lora(tiny_folder, root / name, r=shapes[name][0], alpha=shapes[name][1],
                                    seed=i + 1) for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def pristine(tiny_folder, spec):
    """Results of the base model before any adapter was ever loaded into it (plain Linear layers)."""
    model = TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    return _decode(model, *_base_rows())


@pytest.fixture(scope="module")
def model(tiny_folder, spec, loras):
    model = TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    for name, folder in loras.items():
        model.load_adapter(name, folder)
    model.activate_adapter(None)
    return model


class Logits(DecodeHooks):
    def __init__(self):
        self.logits = []

    def on_logits(self, step, logits):
        self.logits.append(logits.clone())


def _row(stack=(), params=GREEDY, seed=3, prompt="warm analog synth"):
    return Row(prompt, FRAMES, seed, params, adapters=tuple(stack))


def _base_rows():
    return [_row(), _row(params=SAMPLE, seed=11, prompt="drums and bass")]


def _decode(model, *rows, hooks=None):
    return model.generate_batch(list(rows), hooks, stream_every_s=None)


def _state(model):
    """Everything a stack may touch: the base weights, each LoRA layer's scaling and active adapters."""
    from peft.tuners.lora import LoraLayer

    weights = {k: v.clone() for k, v in model.model.state_dict().items() if "lora_" not in k}
    layers = {n: (dict(m.scaling), list(m.active_adapters), m.disable_adapters)
              for n, m in model.model.named_modules() if isinstance(m, LoraLayer)}
    return weights, layers


STACKS = [
    (("A", 0.0),),
    (("A", 2.0),),
    (("B", 0.35),),
    (("A", 0.5), ("B", 1.5)),
    (("A", 1.0), ("B", 1.0), ("C", 1.0)),
    (("C", 2.0), ("A", 0.0), ("B", 0.7)),
]


def test_the_base_is_bit_identical_after_any_stack(model, pristine):
    alone = _decode(model, _row((("A", 1.0),)))[0]
    before = _decode(model, *_base_rows())
    for got, want in zip(before, pristine):  # loading adapters (PEFT wraps the layers) changes no base code
        assert np.array_equal(got.codes, want.codes)
    weights, layers = _state(model)
    for stack in STACKS:
        stacked = _decode(model, _row(stack), _row(stack, params=SAMPLE, seed=11, prompt="drums and bass"))
        if any(s for _, s in stack):
            assert not np.array_equal(stacked[0].codes, before[0].codes), stack  # the stack did something
        after = _decode(model, *_base_rows())
        for got, want in zip(after, before):
            assert np.array_equal(got.codes, want.codes), stack
            assert np.array_equal(got.audio, want.audio), stack  # bit for bit, not just close
        w, l = _state(model)
        assert l == layers, stack  # scaling values and active adapters exactly as they were
        assert all(torch.equal(w[k], weights[k]) for k in weights), stack  # never merged
    again = _decode(model, _row((("A", 1.0),)))[0]
    assert np.array_equal(again.codes, alone.codes) and np.array_equal(again.audio, alone.audio)


def test_strength_0_is_the_base_and_strength_1_the_adapter_alone(model):
    base, zero = Logits(), Logits()
    want = _decode(model, _row(), hooks=base)[0]
    got = _decode(model, _row((("A", 0.0), ("B", 0.0))), hooks=zero)[0]
    assert np.array_equal(got.codes, want.codes)
    assert all(torch.equal(a, b) for a, b in zip(zero.logits, base.logits))
    # A at 1 in a stack (B beside it at 0: the stacked path, set_scale and set_adapter([A, B])) = A alone
    alone, stacked = Logits(), Logits()
    want = _decode(model, _row((("A", 1.0),)), hooks=alone)[0]
    got = _decode(model, _row((("A", 1.0), ("B", 0.0))), hooks=stacked)[0]
    assert np.array_equal(got.codes, want.codes)
    assert all(torch.equal(a, b) for a, b in zip(stacked.logits, alone.logits))
    assert not np.array_equal(want.codes, _decode(model, _row())[0].codes)


def _merged_reference(folder, loras, stack):
    """The base loaded afresh (no PEFT), its weights plus sum_i s_i x (alpha_i / r_i) x B_i @ A_i, computed
    from the adapters' files: what the stack should compute, by merging."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    ref = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, strength in stack:
            config = json.loads((loras[name] / "adapter_config.json").read_text())
            scale = strength * config["lora_alpha"] / config["r"]
            tensors = load_file(str(loras[name] / "adapter_model.safetensors"))
            for key, a in tensors.items():
                if not key.endswith("lora_A.weight"):
                    continue
                module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                b = tensors[key.replace("lora_A", "lora_B")]
                modules[module].weight += scale * (b @ a)
    return ref, AutoProcessor.from_pretrained(folder)


@pytest.mark.parametrize("stack", [
    (("A", 0.5), ("B", 1.5)),
    (("A", 2.0),),
    (("A", 1.0), ("B", 1.0), ("C", 0.3)),
    (("C", 1.7), ("B", 0.0)),
], ids=str)
def test_a_stack_equals_the_merged_sum_of_its_scaled_deltas(model, loras, tiny_folder, spec, stack):
    got_logits, ref_logits = Logits(), Logits()
    rows = [_row(stack), _row(stack, params=SAMPLE, seed=11, prompt="drums and bass")]
    got = _decode(model, *rows, hooks=got_logits)
    ref, processor = _merged_reference(tiny_folder, loras, stack)
    want = decode_batch(ref, processor, [_row(), _row(params=SAMPLE, seed=11, prompt="drums and bass")],
                        frame_rate=spec.frame_rate, sample_rate=spec.sample_rate, hooks=ref_logits,
                        stream_every_s=None)
    for g, w in zip(got, want):
        assert np.array_equal(g.codes, w.codes)
    worst = max(float((a - b).abs().max()) for a, b in zip(got_logits.logits, ref_logits.logits))
    assert worst < 1e-4, worst
    # and the stack is not any one of its adapters alone
    for name, strength in stack:
        if strength:
            assert not np.array_equal(_decode(model, _row(((name, 1.0),)))[0].codes, got[0].codes)


def test_single_adapters_at_their_own_strengths_mix_in_one_batch(model):
    """Rows with at most one adapter each (each adapter one strength) share a batch through PEFT's per-row
    adapter names; each row equals the same row decoded alone."""
    rows = [_row(), _row((("A", 0.5),)), _row((("B", 1.0),), seed=5), _row((("A", 0.5),), params=SAMPLE, seed=9)]
    scaling = {n: v[0] for n, v in _state(model)[1].items()}
    together = _decode(model, *rows)
    for row, got in zip(rows, together):
        assert np.array_equal(got.codes, _decode(model, row)[0].codes)
    assert {n: v[0] for n, v in _state(model)[1].items()} == scaling  # the strengths were for that batch only


@pytest.mark.parametrize("rows", [
    [(("A", 0.5), ("B", 1.0)), ()],
    [(("A", 0.5),), (("A", 1.5),)],
], ids=["a stack beside the base", "one adapter at two strengths"])
def test_rows_that_cannot_share_a_batch_are_refused(model, rows):
    _, layers = _state(model)
    with pytest.raises(Incompatible) as err:
        _decode(model, *[_row(stack) for stack in rows])
    assert err.value.code == "mixed_stacks"
    assert _state(model)[1] == layers


def test_batch_keys():
    """Plain rows (the base, one adapter at strength 1) mix as before; any other stack batches only with itself."""
    plain = [Row("p", 5, 1, GREEDY), Row("p", 5, 1, GREEDY, adapter="A"), _row((("B", 1.0),))]
    assert {batch_key(r) for r in plain} == {None}
    assert batch_key(_row((("A", 0.5),))) == (("A", 0.5),)
    assert batch_key(_row((("A", 1.0), ("B", 1.0)))) != batch_key(_row((("B", 1.0), ("A", 1.0))))


def test_loading_a_stack_never_evicts_its_own_adapters(tiny_folder, spec, loras):
    model = TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    model.max_adapters = 1
    for name in NAMES:
        model.load_adapter(name, loras[name], keep=NAMES)
    assert set(model.adapters) == set(NAMES)
    result = _decode(model, _row((("A", 1.0), ("B", 0.5), ("C", 0.5))))[0]
    assert result is not None
    model.load_adapter("D", loras["A"])  # no longer kept: the least recently used go
    assert list(model.adapters) == ["D"]


def test_the_static_shape_path_applies_stacks_alike(tiny_folder, spec, loras, model):
    """The GPU fast path's static-shape step (eager here: no CUDA) reads the same PEFT layers: same codes."""
    fast = TransformersBackend(fast_path=True).load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    for name, folder in loras.items():
        fast.load_adapter(name, folder)
    stack = (("A", 0.5), ("C", 1.5))
    for rows in ([_row(stack)], [_row()], [_row((("B", 2.0),))]):
        assert np.array_equal(_decode(fast, *rows)[0].codes, _decode(model, *rows)[0].codes)
