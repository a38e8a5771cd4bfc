"""Long pieces and continuations in the decode loop: window by window (audiocraft's scheme), prompt codes forced
where the delay pattern puts them, one progress over every window, streaming across windows, cancel mid-piece."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.registry import parse_registry
from studio.runtime.backend import DecodeHooks, Row, SamplingParams
from studio.runtime.decode import plan_windows
from studio.runtime.transformers_backend import TransformersBackend
from tests.conftest import registry_dict
from tests.stereo_model import stereo_model

GREEDY = SamplingParams(do_sample=False, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
SAMPLE = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
WINDOW, STRIDE = 60, 36  # frames: a 1.2 s window, 0.72 s new per further window (short: the tests stay fast)


@pytest.fixture(scope="module")
def loaded(tiny_folder):
    spec = parse_registry(registry_dict(**{"tiny-long": {
        "source": {"builtin": "studio-tiny"}, "max_duration_s": 1.2, "max_extended_duration_s": 12,
        "window_stride_s": 0.72}})).get("tiny-long")
    return TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)


class Recorder(DecodeHooks):
    def __init__(self, stop_after: int | None = None):
        self.steps, self.chunks, self.plan = [], {}, None
        self.stop_after = stop_after

    def on_plan(self, ends, total):
        self.plan = (list(ends), total)

    def on_step(self, done, total):
        self.steps.append((done, total))

    def stopped(self, row):
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def on_audio(self, row, start, chunk):
        self.chunks.setdefault(row, []).append((start, chunk))


@pytest.mark.parametrize("prompt, new, window, stride", [
    (0, 30, 60, 36), (0, 60, 60, 36), (0, 61, 60, 36), (0, 200, 60, 36), (10, 30, 60, 36), (100, 7, 60, 36),
    (40, 150, 60, 36), (0, 4500, 1500, 900), (0, 2250, 1500, 900), (600, 9000, 1500, 900), (5, 5, None, None)])
def test_window_plan(prompt, new, window, stride):
    """Every window fits, the first continues the prompt's end, each further one keeps the end of what came
    before as context and adds at least min(stride, what is left) new frames; the new frames add up."""
    plan = plan_windows(prompt, new, window, stride)
    assert sum(n for _, n in plan) == new
    have = prompt
    for k, (context, n) in enumerate(plan):
        assert n >= 1 and context <= have
        if window is not None:
            assert context + n <= window
            assert n >= min(stride, new - sum(m for _, m in plan[:k]))
            if k:
                assert context >= window - stride  # a further window sees at least window - stride frames
        have += n
    if window is not None and prompt == 0:  # audiocraft's count: ceil((length - window) / stride) + 1
        assert len(plan) == 1 + max(0, -(-(new - window) // stride))


def test_long_piece_exact_length_windows_and_progress(loaded):
    frames = 200  # 4 s in windows of 60 frames: 1 + ceil(140 / 36) = 5 windows
    hooks = Recorder()
    result = loaded.generate_batch([Row("calm piano", frames, 3, SAMPLE)], hooks, stream_every_s=0.5,
                                   window=WINDOW, stride=STRIDE)[0]
    assert result.codes.shape == (4, frames)
    assert result.audio.shape == (round(frames / 50 * 32000), 1)
    assert result.windows == 5
    done = [d for d, _ in hooks.steps]
    assert all(t == hooks.plan[1] for _, t in hooks.steps)
    assert done == sorted(done) and done[-1] == hooks.plan[1] == hooks.plan[0][0]
    assert hooks.plan[1] == 5 * (WINDOW + 3)  # every window is full; each decodes its context again
    # the stream runs on across windows: contiguous chunks covering the whole piece, the same audio as the result
    chunks = hooks.chunks[0]
    assert [s for s, _ in chunks][1:] == [s + len(c) for s, c in chunks][:-1]
    stream = np.concatenate([c for _, c in chunks])
    assert len(stream) == len(result.audio)
    rms = float(np.sqrt(np.mean(result.audio ** 2)))
    assert float(np.sqrt(np.mean((stream - result.audio) ** 2))) / rms < 0.1


def test_each_window_continues_the_previous_ones_end(loaded):
    """Greedy: a long piece's codes equal, window by window, a one-window decode of that window's context as a
    prompt: the windows really continue each other (and forcing puts the context where the delay pattern does)."""
    frames = 130
    whole = loaded.generate_batch([Row("rock", frames, 0, GREEDY)], stream_every_s=None, window=WINDOW,
                                  stride=STRIDE)[0].codes
    have = 0
    for context, new in plan_windows(0, frames, WINDOW, STRIDE):
        if context:
            row = Row("rock", new, 0, GREEDY, prompt_codes=whole[:, have - context:have])
            alone = loaded.generate_batch([row], stream_every_s=None, window=None)[0]
            assert np.array_equal(alone.codes, whole[:, have - context:have + new])
        have += new


def test_a_continuation_of_greedy_codes_gives_the_same_codes(loaded):
    """Forcing a greedy decode's own first frames and going on greedily gives back that decode: the prompt codes
    sit exactly where the delay pattern puts them. keep_prompt False: the result is the new frames only."""
    ref = loaded.generate_batch([Row("jazz", 50, 0, GREEDY)], stream_every_s=None)[0]
    kept = loaded.generate_batch([Row("jazz", 30, 0, GREEDY, prompt_codes=ref.codes[:, :20])], stream_every_s=None)[0]
    assert np.array_equal(kept.codes, ref.codes)
    assert kept.audio.shape == ref.audio.shape
    hooks = Recorder()
    new_only = loaded.generate_batch([Row("jazz", 30, 0, GREEDY, prompt_codes=ref.codes[:, :20], keep_prompt=False)],
                                     hooks, stream_every_s=0.2)[0]
    assert np.array_equal(new_only.codes, ref.codes[:, 20:])
    assert new_only.audio.shape == (30 * 640, 1)
    assert sum(len(c) for _, c in hooks.chunks[0]) == 30 * 640 and hooks.chunks[0][0][0] == 0


def test_rows_with_different_window_counts_share_a_batch(loaded):
    rows = [Row("a", 40, 1, GREEDY), Row("b", 150, 2, SAMPLE), Row("c", 100, 3, GREEDY, prompt_codes=np.zeros(
        (4, 10), dtype=np.int64))]
    hooks = Recorder()
    results = loaded.generate_batch(rows, hooks, stream_every_s=None, window=WINDOW, stride=STRIDE)
    assert [r.windows for r in results] == [1, 4, 3]
    assert [r.codes.shape[1] for r in results] == [40, 150, 110]
    alone = loaded.generate_batch([rows[0]], stream_every_s=None, window=WINDOW, stride=STRIDE)[0]
    assert np.array_equal(alone.codes, results[0].codes)  # leaving the batch early changes nothing for it
    ends, total = hooks.plan
    assert ends[0] < ends[2] < ends[1] == total and hooks.steps[-1][0] == total


def test_cancel_in_the_second_window(loaded):
    hooks = Recorder(stop_after=WINDOW + 3 + 10)  # 10 steps into the second window
    results = loaded.generate_batch([Row("x", 150, 1, SAMPLE)], hooks, stream_every_s=None, window=WINDOW,
                                    stride=STRIDE)
    assert results == [None]
    assert len(hooks.steps) == WINDOW + 3 + 10  # stopped at the next step, nothing more decoded


def test_bad_prompt_codes_are_refused(loaded):
    with pytest.raises(ValueError, match="prompt codes"):
        loaded.generate_batch([Row("x", 10, 1, GREEDY, prompt_codes=np.zeros((3, 5), dtype=np.int64))])
    with pytest.raises(ValueError, match="prompt codes"):
        loaded.generate_batch([Row("x", 10, 1, GREEDY, prompt_codes=np.full((4, 5), 5000, dtype=np.int64))])


def test_encode_then_continue_an_audio_clip(loaded):
    """An audio clip encoded with the model's codec continues: its codes head the result, whose audio is
    the clip's decode followed by the new frames."""
    t = np.arange(16000) / 32000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    codes = loaded.encode(clip)
    assert codes.shape == (4, 25) and codes.dtype == np.int64
    result = loaded.generate_batch([Row("x", 80, 1, SAMPLE, prompt_codes=codes)], stream_every_s=None,
                                   window=WINDOW, stride=STRIDE)[0]
    assert np.array_equal(result.codes[:, :25], codes) and result.codes.shape == (4, 105)
    assert result.windows == 3


def test_stereo_long_piece_and_continuation():
    from studio.runtime.transformers_backend import TransformersMusicgen

    model, processor = stereo_model()
    spec = parse_registry(registry_dict(**{"stereo": {
        "source": {"builtin": "studio-tiny"}, "channels": 2, "codebooks": 8, "max_duration_s": 1.2,
        "max_extended_duration_s": 12, "window_stride_s": 0.72}})).get("stereo")
    loaded = TransformersMusicgen(spec, model, processor, torch.device("cpu"))
    hooks = Recorder()
    result = loaded.generate_batch([Row("stereo rock", 150, 2, SAMPLE)], hooks, stream_every_s=0.5)[0]
    assert result.codes.shape == (8, 150) and result.audio.shape == (150 * 640, 2) and result.windows == 4
    assert sum(len(c) for _, c in hooks.chunks[0]) == 150 * 640
    assert all(c.shape[1] == 2 for _, c in hooks.chunks[0])
    # greedy: each window continues the previous one's end, left and right codebooks alike
    whole = loaded.generate_batch([Row("stereo", 100, 0, GREEDY)], stream_every_s=None)[0].codes
    context, new = plan_windows(0, 100, WINDOW, STRIDE)[1]
    alone = loaded.generate_batch([Row("stereo", new, 0, GREEDY, prompt_codes=whole[:, 60 - context:60])],
                                  stream_every_s=None, window=None)[0]
    assert np.array_equal(alone.codes, whole[:, 60 - context:60 + new])
    # a stereo clip (left and right differ) encodes to interleaved codes and is continued
    t = np.arange(16000) / 32000
    clip = np.stack([np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1).astype(np.float32)
    codes = loaded.encode(clip)
    assert codes.shape == (8, 25)
    assert np.array_equal(codes[0::2], loaded.encode(np.repeat(clip[:, :1], 2, axis=1))[0::2])  # left alone
    out = loaded.generate_batch([Row("x", 50, 1, SAMPLE, prompt_codes=codes)], stream_every_s=None)[0]
    assert np.array_equal(out.codes[:, :25], codes) and out.audio.shape == (75 * 640, 2)
