"""MusicGen Melody in the studio's decode loop (studio/runtime/decode.py `_PrefixDecoder`) against transformers'
MusicgenMelodyForConditionalGeneration.generate(): the conditioning (projected chroma tiled to chroma_length, then
the text states) is a prefix of the decoder's sequence, with the null melody and zero text for guidance."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.registry import parse_registry
from studio.runtime.backend import Row, SamplingParams
from studio.runtime.chroma import chromagram
from studio.runtime.transformers_backend import TransformersBackend
from tests.conftest import registry_dict
from tests.melody_support import TINY_MELODY, melody_folder, tune

GREEDY = SamplingParams(do_sample=False, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
SAMPLE = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
C_MAJOR = [261.63, 329.63, 392.0, 523.25]
OTHER = [440.0, 369.99, 493.88, 311.13]


def _params(base: SamplingParams, **changes) -> SamplingParams:
    return SamplingParams(**{**base.__dict__, **changes})


@pytest.fixture(scope="module")
def models():
    """studio-tiny-melody and a 48-wide variant (its text states go through enc_to_dec_proj)."""
    spec = parse_registry(registry_dict(**{"studio-tiny-melody": TINY_MELODY})).get("studio-tiny-melody")
    return {key: TransformersBackend().load(melody_folder(width), spec, torch.device("cpu"), torch.float32)
            for key, width in (("tiny", 32), ("h48", 48))}


@contextmanager
def _recorded_codes(model):
    seen = []
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        seen.append(codes.clone())
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = spy
    try:
        yield seen
    finally:
        del model.audio_encoder.decode


def _generate(loaded, prompts: list[str], frames: int, guidance: float, chroma: np.ndarray | None):
    """transformers' own generate (greedy): codes (rows, codebooks, frames) and audio (rows, samples)."""
    inputs = loaded.processor(text=prompts, padding=True, return_tensors="pt")
    extra = {}
    if chroma is not None:
        extra["input_features"] = torch.from_numpy(np.stack([chroma] * len(prompts)))
    with _recorded_codes(loaded.model) as seen, torch.inference_mode():
        audio = loaded.model.generate(**inputs, **extra, do_sample=False, guidance_scale=guidance,
                                      max_new_tokens=frames + loaded.codebooks_per_channel - 1)
    return seen[0][0].numpy(), audio[:, 0].numpy()


@pytest.mark.parametrize("key", ["tiny", "h48"])
@pytest.mark.parametrize("guidance", [3.0, 1.0])
@pytest.mark.parametrize("with_melody", [True, False])
def test_greedy_codes_equal_generate_bit_for_bit(models, key, guidance, with_melody):
    loaded = models[key]
    frames = 25
    chroma = chromagram(tune(C_MAJOR)) if with_melody else None
    codes, audio = _generate(loaded, ["calm piano"], frames, guidance, chroma)
    row = Row("calm piano", frames, seed=0, params=_params(GREEDY, guidance_scale=guidance), melody=chroma)
    result = loaded.generate_batch([row], stream_every_s=None)[0]
    assert result.codes.shape == (4, frames)
    assert np.array_equal(result.codes, codes[0])
    assert np.array_equal(result.audio[:, 0], audio[0, :frames * 640])


def test_a_batch_of_equal_length_prompts_equals_generate(models):
    """transformers' batched generate pads prompts to the longest and attends the padding; with prompts of one
    length there is none, and the batch's codes are generate's row for row."""
    loaded = models["h48"]
    chroma = chromagram(tune(OTHER))
    prompts = ["rock piano", "jazz drums"]
    assert len(set(map(len, loaded.processor(text=prompts).input_ids))) == 1
    codes, _ = _generate(loaded, prompts, 30, 3.0, chroma)
    rows = [Row(p, 30, seed=0, params=GREEDY, melody=chroma) for p in prompts]
    for i, result in enumerate(loaded.generate_batch(rows, stream_every_s=None)):
        assert np.array_equal(result.codes, codes[i])


def test_a_rows_codes_do_not_depend_on_its_batch_mates(models):
    """Prompts of other token lengths, rows with and without a melody, other lengths, sampling settings and
    guidance: each row decodes as it does alone (its prefix is right-aligned, the padding masked)."""
    loaded = models["tiny"]
    a, b = chromagram(tune(C_MAJOR)), chromagram(tune(OTHER, each_s=1.3))
    rows = [Row("sad slow ambient piano with soft drums", 20, seed=5, params=SAMPLE, melody=a),
            Row("rock", 30, seed=1, params=GREEDY, melody=b),
            Row("jazz bass", 15, seed=2, params=_params(SAMPLE, guidance_scale=1.0, temperature=0.7)),
            Row("lofi", 25, seed=3, params=_params(GREEDY, guidance_scale=5.0), melody=a)]
    together = loaded.generate_batch(rows, stream_every_s=None)
    for row, result in zip(rows, together):
        alone = loaded.generate_batch([row], stream_every_s=None)[0]
        same = float((alone.codes == result.codes).all(axis=0).mean())
        assert same >= 0.95, (row.prompt, same)  # float blocking differs between batch shapes; 1.0 here


def test_the_melody_reaches_the_decoder(models):
    """Another melody, or none, changes the codes; the same melody gives the same codes."""
    loaded = models["tiny"]
    a, b = chromagram(tune(C_MAJOR)), chromagram(tune(OTHER))

    def codes(melody):
        return loaded.generate_batch([Row("rock piano", 30, seed=3, params=GREEDY, melody=melody)],
                                     stream_every_s=None)[0].codes

    first = codes(a)
    assert np.array_equal(first, codes(a.copy()))
    assert not np.array_equal(first, codes(b))
    assert not np.array_equal(first, codes(None))


def test_a_melody_longer_or_shorter_than_the_window(models):
    """A melody of one frame, and one longer than chroma_length (cut, as generate does), both decode."""
    loaded = models["tiny"]
    one = np.zeros((1, 12), dtype=np.float32)
    one[0, 4] = 1
    long = np.tile(chromagram(tune(C_MAJOR)), (60, 1))
    assert long.shape[0] > loaded.model.config.chroma_length
    for chroma in (one, long):
        codes, _ = _generate(loaded, ["pop"], 20, 3.0, chroma)
        result = loaded.generate_batch([Row("pop", 20, 0, GREEDY, melody=chroma)], stream_every_s=None)[0]
        assert np.array_equal(result.codes, codes[0])


def test_bad_melody_shapes_are_refused(models):
    loaded = models["tiny"]
    for bad in (np.zeros((5, 7), np.float32), np.zeros((0, 12), np.float32), np.zeros(12, np.float32)):
        with pytest.raises(ValueError, match="chroma"):
            loaded.generate_batch([Row("pop", 5, 0, GREEDY, melody=bad)], stream_every_s=None)


def test_a_text_only_model_refuses_a_melody(tiny_folder):
    spec = parse_registry(registry_dict()).get("studio-tiny")
    loaded = TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    assert loaded.chroma is None
    with pytest.raises(ValueError, match="melody"):
        loaded.generate_batch([Row("pop", 5, 0, GREEDY, melody=chromagram(tune(C_MAJOR)))], stream_every_s=None)


def test_streaming_and_stopping_work_with_a_melody(models):
    loaded = models["tiny"]
    chunks, steps = [], []

    class Hooks:
        def on_step(self, done, total):
            steps.append(done)

        def stopped(self, row):
            return row == 1 and len(steps) >= 10

        def on_audio(self, row, start, chunk):
            if row == 0:
                chunks.append((start, chunk))

    rows = [Row("pop", 60, 0, SAMPLE, melody=chromagram(tune(C_MAJOR))), Row("rock", 60, 1, SAMPLE)]
    results = loaded.generate_batch(rows, Hooks(), stream_every_s=0.3)
    assert results[1] is None and results[0] is not None
    streamed = np.concatenate([c for _, c in chunks])
    assert [s for s, _ in chunks][0] == 0 and streamed.shape == results[0].audio.shape
    assert np.abs(streamed - results[0].audio).max() < 1e-3 * max(1e-6, np.abs(results[0].audio).max()) + 1e-6


def test_the_registry_must_match_the_weights(tiny_folder):
    from studio.errors import Incompatible

    spec = parse_registry(registry_dict(**{"fake-melody": {"conditioning": ["text", "melody"]}})).get("fake-melody")
    with pytest.raises(Incompatible) as err:
        TransformersBackend().load(tiny_folder, spec, torch.device("cpu"), torch.float32)
    assert err.value.code == "registry_mismatch"


def test_a_melody_model_with_other_chroma_settings_is_refused(tmp_path):
    import json
    import shutil

    from studio.errors import Incompatible

    folder = Path(shutil.copytree(melody_folder(), tmp_path / "other"))
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "hop_length": 2048}))
    spec = parse_registry(registry_dict(**{"studio-tiny-melody": TINY_MELODY})).get("studio-tiny-melody")
    with pytest.raises(Incompatible) as err:
        TransformersBackend().load(folder, spec, torch.device("cpu"), torch.float32)
    assert err.value.code == "unsupported_melody_features"


def test_stereo_melody_greedy_codes_equal_generate():
    """A stereo melody model (8 codebooks, left/right interleaved, like musicgen-stereo-melody): codes and both
    channels' audio equal generate()'s."""
    entry = {**{k: v for k, v in TINY_MELODY.items() if k not in ("id", "display_name")}, "channels": 2,
             "codebooks": 8}
    spec = parse_registry(registry_dict(**{"stereo-melody": entry})).get("stereo-melody")
    loaded = TransformersBackend().load(melody_folder(32, channels=2), spec, torch.device("cpu"), torch.float32)
    chroma = chromagram(tune(C_MAJOR))
    for guidance in (3.0, 1.0):
        inputs = loaded.processor(text=["rock piano"], return_tensors="pt")
        with torch.inference_mode():
            audio = loaded.model.generate(**inputs, input_features=torch.from_numpy(chroma)[None], do_sample=False,
                                          guidance_scale=guidance, max_new_tokens=20 + 3)
        row = Row("rock piano", 20, 0, _params(GREEDY, guidance_scale=guidance), melody=chroma)
        result = loaded.generate_batch([row], stream_every_s=None)[0]
        assert result.codes.shape == (8, 20) and result.audio.shape == (20 * 640, 2)
        assert np.array_equal(result.audio, audio[0].numpy().T[:20 * 640])


def test_a_lora_adapter_applies_to_the_prefix_and_every_step(tmp_path):
    """A PEFT LoRA on the melody decoder's layers: with it active the codes equal generate()'s with it active, and
    differ from the base's (the prefix pass and the steps both run the adapted layers)."""
    from peft import LoraConfig, get_peft_model
    from transformers import MusicgenMelodyForConditionalGeneration

    folder = melody_folder()
    with torch.random.fork_rng(devices=[]):
        base = MusicgenMelodyForConditionalGeneration.from_pretrained(folder)
        torch.manual_seed(0)
        target = r"decoder\.model\.decoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc[12])"
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=target, init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "lora"))
    spec = parse_registry(registry_dict(**{"studio-tiny-melody": TINY_MELODY})).get("studio-tiny-melody")
    loaded = TransformersBackend().load(folder, spec, torch.device("cpu"), torch.float32)
    loaded.load_adapter("A", tmp_path / "lora")
    chroma = chromagram(tune(OTHER))
    codes = {}
    for adapter in ("A", None):
        loaded.activate_adapter(adapter)
        reference, _ = _generate(loaded, ["calm piano"], 20, 3.0, chroma)
        row = Row("calm piano", 20, 0, GREEDY, adapter=adapter, melody=chroma)
        codes[adapter] = loaded.generate_batch([row], stream_every_s=None)[0].codes
        assert np.array_equal(codes[adapter], reference[0])
    assert not np.array_equal(codes["A"], codes[None])
    # both in one batch: PEFT's per-row adapters over the prefix and the steps
    mixed = loaded.generate_batch([Row("calm piano", 20, 0, GREEDY, adapter=a, melody=chroma) for a in ("A", None)],
                                  stream_every_s=None)
    assert np.array_equal(mixed[0].codes, codes["A"]) and np.array_equal(mixed[1].codes, codes[None])
