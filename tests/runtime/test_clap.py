"""CLAP scoring (studio/runtime/clap.py) with studio-tiny-clap: built here, saved as a transformers folder
(safetensors) and loaded back by the same from_pretrained code as a hub checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.runtime.clap import ClapScorer, build_tiny_clap, resample


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return build_tiny_clap(tmp_path_factory.mktemp("clap") / "studio-tiny-clap")


@pytest.fixture(scope="module")
def scorer(tiny_clap):
    return ClapScorer.load(tiny_clap)


def _clip(seed: int, seconds: float, rate: int = 32000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * seed) * t)
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)[:, None]


def test_the_tiny_clap_is_a_transformers_folder_with_safetensors_weights_only(tiny_clap):
    names = {p.name for p in tiny_clap.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    assert not list(tiny_clap.parent.glob(".tiny-clap-*"))  # built atomically, nothing left beside it
    # a second build is a no-op on a complete folder
    before = (tiny_clap / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_clap(tiny_clap) == tiny_clap
    assert (tiny_clap / "model.safetensors").stat().st_mtime_ns == before


def test_the_same_seed_builds_the_same_weights(tiny_clap, tmp_path, scorer):
    again = ClapScorer.load(build_tiny_clap(tmp_path / "again"))
    for (name, a), (_, b) in zip(scorer.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_score_is_a_finite_cosine_in_range_and_deterministic(tiny_clap, scorer):
    clip = _clip(1, 2.0)
    value = scorer.score([("calm piano", clip, 32000)])[0]
    assert np.isfinite(value) and -1.0 <= value <= 1.0
    reloaded = ClapScorer.load(tiny_clap)  # a fresh load of the same folder scores the same
    assert reloaded.score([("calm piano", clip, 32000)])[0] == pytest.approx(value, abs=1e-6)
    # the score IS the cosine of the two embeddings
    text = scorer.text_embeddings(["calm piano"])[0]
    audio = scorer.audio_embedding(clip, 32000)
    assert torch.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)
    assert torch.linalg.norm(audio) == pytest.approx(1.0, abs=1e-5)
    assert value == pytest.approx(float(text @ audio), abs=1e-6)


def test_matched_and_mismatched_pairs_are_scored_consistently(scorer):
    """Random weights know no music, but the scores of crossed pairs must be the crossed cosines: scoring
    (prompt A, clip A) and (prompt B, clip A) differs exactly as their text embeddings do."""
    a, b = _clip(1, 1.5), _clip(2, 1.5)
    texts = ["rock drums", "ambient pads"]
    matrix = scorer.text_embeddings(texts) @ torch.stack([scorer.audio_embedding(a, 32000),
                                                         scorer.audio_embedding(b, 32000)]).T
    crossed = scorer.score([(texts[0], a, 32000), (texts[1], a, 32000), (texts[0], b, 32000), (texts[1], b, 32000)])
    assert crossed == pytest.approx([float(matrix[0, 0]), float(matrix[1, 0]), float(matrix[0, 1]),
                                     float(matrix[1, 1])], abs=1e-6)
    assert len({round(v, 6) for v in crossed}) == 4  # each pair gets its own score


def test_stereo_is_mixed_to_mono_and_the_rate_does_not_change_the_score_much(scorer):
    mono = _clip(3, 2.0)
    stereo = np.repeat(mono, 2, axis=1)
    assert scorer.score([("x", stereo, 32000)]) == pytest.approx(scorer.score([("x", mono, 32000)]), abs=1e-6)
    at_48k = resample(mono[:, 0], 32000, 48000)[:, None]
    assert len(at_48k) == 96000  # 3/2 exactly
    assert scorer.score([("x", at_48k, 48000)])[0] == pytest.approx(scorer.score([("x", mono, 32000)])[0], abs=1e-6)


def test_a_resampled_tone_keeps_its_pitch():
    rate, target = 32000, 48000
    t = np.arange(rate) / rate
    out = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate, target)
    peak = np.argmax(np.abs(np.fft.rfft(out))) * target / len(out)
    assert peak == pytest.approx(440, abs=2)


def test_a_clip_longer_than_the_window_is_scored_whole_and_deterministically(scorer):
    """The feature extractor would take a random 10 s crop: the studio embeds every 10 s window instead."""
    long = np.concatenate([_clip(4, 10.0), _clip(5, 10.0), _clip(6, 4.0)])  # 24 s: windows of 10, 10, 4 s
    first = scorer.audio_embedding(long, 32000)
    assert torch.allclose(first, scorer.audio_embedding(long, 32000), atol=1e-6)  # no random crop
    parts = [scorer.audio_embedding(p, 32000) for p in (long[:320000], long[320000:640000], long[640000:])]
    weighted = torch.nn.functional.normalize(10 * parts[0] + 10 * parts[1] + 4 * parts[2], dim=0)
    assert torch.allclose(first, weighted, atol=1e-5)
    assert not torch.allclose(first, parts[0], atol=1e-3)  # the end of the clip counts too


@pytest.mark.parametrize("chars", [78, 84, 1000])  # 1000: the studio's longest prompt
def test_a_prompt_longer_than_the_text_encoder_is_cut_there_not_a_crash(scorer, chars):
    """The tiny CLAP's tokenizer states no length limit and its text encoder has 80 positions: a long prompt (one
    of the evaluation set's is 84 tokens) was an index error in every evaluation run."""
    long = ("upbeat electronic dance track with a four-on-the-floor kick and bright synth leads " * 13)[:chars]
    value, = scorer.score([(long, _clip(1, 1.0), 32000)])
    assert -1.0 <= value <= 1.0
    if chars > 80:  # everything past the cut weighs nothing: the score is the cut prompt's
        assert value == pytest.approx(scorer.score([(long + " and more words", _clip(1, 1.0), 32000)])[0])
