"""Preference tuning (method "dpo") on pairs of codes: it learns the votes (held-out pairs), starts from an adapter,
and resumes exactly like sft."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from studio.training import layout
from studio.training.data import encode_audio, write_codes
from studio.training.trainer import Trainer
from tests.tone_dataset import tone

BASS, SYNTH = "calm bass", "fast synth"


@pytest.fixture(scope="module")
def pair_codes(tmp_path_factory, tone_tiny) -> dict[tuple[str, int], Path]:
    """Codes files of 2 s tones (as an A/B test's jobs leave them), by (kind, seed)."""
    from transformers import MusicgenForConditionalGeneration

    torch.set_num_threads(1)
    model = MusicgenForConditionalGeneration.from_pretrained(tone_tiny, local_files_only=True)
    folder = tmp_path_factory.mktemp("pair-codes")
    files = {}
    for kind in (BASS, SYNTH):
        for seed in list(range(8)) + list(range(50, 54)):
            path = folder / f"{kind.replace(' ', '_')}-{seed}.codes.safetensors"
            write_codes(path, encode_audio(model, tone(kind, 2.0, seed=seed)[None]))
            files[kind, seed] = path
    return files


def pairs(files, seeds) -> list[layout.PreferencePair]:
    """Each prompt prefers its own kind of tone: a model must read the text to prefer the right one."""
    out = []
    for seed in seeds:
        out.append(layout.PreferencePair(prompt=BASS, chosen=str(files[BASS, seed]), rejected=str(files[SYNTH, seed])))
        out.append(layout.PreferencePair(prompt=SYNTH, chosen=str(files[SYNTH, seed]),
                                         rejected=str(files[BASS, seed])))
    return out


@torch.no_grad()
def preference_accuracy(trainer: Trainer, held_out: list[layout.PreferencePair], adapter: bool) -> float:
    """Share of pairs whose chosen clip is more likely than the rejected one (with or without the adapter)."""
    from studio.training.data import read_codes

    trainer.items = [(read_codes(p.chosen, 4), read_codes(p.rejected, 4)) for p in held_out]
    trainer.captions = [p.prompt for p in held_out]
    trainer.model.eval()
    ctx = trainer.model.disable_adapter() if not adapter else nullcontext()
    with ctx:
        chosen, rejected = trainer.pair_logprobs(list(range(len(held_out))))
    return float((chosen > rejected).float().mean())


def test_dpo_raises_preference_accuracy_on_held_out_pairs(make_spec, pair_codes):
    folder, spec = make_spec(method="dpo", clips=[], pairs=pairs(pair_codes, range(8)), max_steps=30,
                             learning_rate=5e-3, batch_size=4, dpo_beta=0.1, checkpoint_every=100)
    done = Trainer(folder, spec)
    result = done.run()
    assert result.status == "succeeded", result.message
    steps = [e for e in layout.read_events(folder / layout.EVENTS_FILE)[0] if e.kind == "step"]
    assert len(steps) == 30 and all(e.accuracy is not None for e in steps)
    assert steps[0].loss == pytest.approx(0.6931, abs=1e-3)  # the policy starts as its reference: -log(0.5)
    assert sum(e.loss for e in steps[-5:]) / 5 < 0.6
    held_out = pairs(pair_codes, range(50, 54))
    before = preference_accuracy(done, held_out, adapter=False)
    after = preference_accuracy(done, held_out, adapter=True)
    print(f"held-out preference accuracy: base {before:.2f}, after dpo {after:.2f}")
    assert after >= 0.875 and after > before, (before, after)


def test_dpo_from_an_adapter_against_the_base_resumes_exactly(make_spec, pair_codes):
    sft, sft_spec = make_spec("sft", max_steps=3, checkpoint_every=100)
    assert Trainer(sft, sft_spec).run().status == "succeeded"
    start = str(layout.checkpoint_folder(sft, 3))
    fields = dict(method="dpo", clips=[], pairs=pairs(pair_codes, range(4)), max_steps=6, checkpoint_every=3,
                  start_adapter=start, dpo_reference="base", batch_size=2)
    whole, spec = make_spec("whole", **fields)
    assert Trainer(whole, spec).run().status == "succeeded"
    first = [e for e in layout.read_events(whole / layout.EVENTS_FILE)[0] if e.kind == "step"]
    # against the base, the started-from adapter already differs from its reference: the loss is not log 2
    assert first[0].loss != pytest.approx(0.6931, abs=1e-4)

    part, spec = make_spec("part", **fields)
    (part / layout.STOP_FILE).unlink(missing_ok=True)
    trainer = Trainer(part, spec, stop_requested=lambda: trainer.step >= 3)
    assert trainer.run().status == "stopped"
    assert Trainer(part, spec.model_copy(update={"resume_from": 3})).run().status == "succeeded"
    got = [e for e in layout.read_events(part / layout.EVENTS_FILE)[0] if e.kind == "step"]
    assert [e.step for e in got] == list(range(1, 7))
    for a, b in zip(first, got):
        assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-6)
        assert b.accuracy == a.accuracy
