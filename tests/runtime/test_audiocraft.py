"""studio/runtime/audiocraft.py against checkpoints written by the real audiocraft 1.3.0 (tests/fixtures/audiocraft,
built by its build.py): the converted model's teacher-forced logits equal audiocraft's within 1e-5 and the studio's
decode loop gives audiocraft's greedy codes; unsafe pickles are refused without running anything; every option
transformers' MusicGen cannot represent is refused by name."""
from __future__ import annotations

import collections
import copy
import os
import shutil
import typing

import numpy as np
import pytest
import torch
import yaml

from studio.errors import InvalidRequest
from studio.registry import ModelSpec
from studio.runtime import audiocraft as ac
from studio.runtime.backend import Row, SamplingParams
from studio.runtime.model_config import describe
from studio.runtime.transformers_backend import TransformersBackend
from tests.audiocraft_support import (CODEC_REPO, FIXTURES, T5_REPO, expected, text_encoder_digest,
                                      write_reference_repos)

GREEDY = SamplingParams(do_sample=False, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
MONO_CONFIG = None  # read once per module from the fixture (see mono_config)


@pytest.fixture(scope="module")
def refs(tmp_path_factory, tiny_folder):
    repos = write_reference_repos(tiny_folder, tmp_path_factory.mktemp("refs"))
    meta, _ = expected("mono")
    # the fixtures' expected logits were computed with exactly this text encoder
    assert text_encoder_digest(repos[T5_REPO]) == meta["t5_digest"]
    return repos


@pytest.fixture(scope="module")
def convert(refs, tmp_path_factory):
    """name -> the converted folder of a fixture (converted once per module)."""
    out, done = tmp_path_factory.mktemp("converted"), {}

    def run(name: str, filename: str = "state_dict.bin"):
        if (name, filename) not in done:
            ckpt = ac.read_checkpoint(FIXTURES / name / filename)
            compression = FIXTURES / name / "compression_state_dict.bin"
            plan = ac.plan_of(ckpt.config, ckpt.tensors,
                              ac.read_compression(compression) if compression.is_file() else None)
            converted = ac.convert(ckpt, plan, refs[T5_REPO], refs[CODEC_REPO], out / f"{name}-{filename}")
            done[(name, filename)] = (converted, plan, ckpt)
        return done[(name, filename)]

    return run


def _load(converted: ac.Converted):
    spec = ModelSpec.model_validate({"id": "imported", "display_name": "Imported", "backend": "transformers",
                                     "source": {"folder": str(converted.folder)},
                                     **describe(converted.config, converted.weights_bytes)})
    return TransformersBackend().load(converted.folder, spec, torch.device("cpu"), torch.float32)


def _teacher_forced(model, processor, texts, codes, channels, chroma=None):
    """The converted model's logits for `codes` (B, K, T), laid out like audiocraft's compute_predictions: the
    codes delayed (codebook k by k // channels steps) after the start token, logits[b, k, t] predicting codes[b, k, t]."""
    b, k, t = codes.shape
    card = model.config.decoder.vocab_size
    delays = [i // channels for i in range(k)]
    steps = t + max(delays)
    seq = torch.full((b, k, steps), card, dtype=torch.long)
    for i, d in enumerate(delays):
        seq[:, i, d + 1:d + 1 + t] = codes[:, i, :steps - d - 1]
    inputs = getattr(processor, "tokenizer", processor)(texts, padding=True, return_tensors="pt")
    extra = {}
    if chroma is not None:
        model.config.chroma_length = chroma.shape[1]  # audiocraft was given this chroma as is (not tiled to 30 s)
        extra["input_features"] = chroma
    with torch.inference_mode():
        logits = model(**inputs, **extra, decoder_input_ids=seq.reshape(b * k, steps)).logits
    logits = logits[:, -steps:].reshape(b, k, steps, -1)
    return torch.stack([logits[:, i, delays[i]:delays[i] + t] for i in range(k)], dim=1)


@pytest.mark.parametrize("name", ["mono", "stereo", "melody", "lora_merged"])
def test_converted_logits_equal_audiocrafts(convert, name):
    converted, plan, _ = convert(name)
    meta, want = expected(name)
    loaded = _load(converted)
    got = _teacher_forced(loaded.model, loaded.processor, meta["texts"], want["codes"], meta["channels"],
                          want.get("chroma"))
    mask = want["mask"].bool()
    diff = (got - want["logits"])[mask.unsqueeze(-1).expand_as(got)].abs().max().item()
    print(f"{name}: max |logit difference| vs audiocraft over {int(mask.sum())} positions: {diff:.2e}")
    assert diff < 1e-5
    assert plan.channels == meta["channels"] and plan.codebooks == meta["n_q"] and plan.dim == meta["dim"]


@pytest.mark.parametrize("name", ["mono", "stereo", "lora_merged"])
@pytest.mark.parametrize("guidance,key", [(3.0, "greedy"), (1.0, "greedy_nocfg")])
def test_the_studios_decode_loop_gives_audiocrafts_greedy_codes(convert, name, guidance, key):
    converted, _, _ = convert(name)
    meta, want = expected(name)
    loaded = _load(converted)
    frames = meta["max_gen_len"]
    for b, text in enumerate(meta["texts"]):
        row = Row(text, frames, seed=0, params=SamplingParams(**{**GREEDY.__dict__, "guidance_scale": guidance}))
        result = loaded.generate_batch([row], stream_every_s=None)[0]
        assert np.array_equal(result.codes, want[key][b].numpy()), (name, text, key)


@pytest.mark.parametrize("guidance,key", [(3.0, "greedy"), (1.0, "greedy_nocfg")])
def test_the_converted_melody_model_gives_audiocrafts_greedy_codes(convert, guidance, key):
    """With guidance too: the converted model's config says its unconditional melody is audiocraft's (all zeros),
    not transformers' (one lit pitch class), which reproduces 15-20 % of these codes only."""
    converted, plan, _ = convert("melody")
    meta, want = expected("melody")
    assert plan.melody and plan.chroma == {"n_chroma": 12, "n_fft": 16384}
    assert converted.config["architectures"] == ["MusicgenMelodyForConditionalGeneration"]
    assert converted.config["null_melody"] == "zeros"
    loaded = _load(converted)
    loaded.model.config.chroma_length = want["chroma"].shape[1]  # audiocraft's prefix was these 6 frames
    for b, text in enumerate(meta["texts"]):
        row = Row(text, meta["max_gen_len"], seed=0, melody=want["chroma"][b].numpy(),
                  params=SamplingParams(**{**GREEDY.__dict__, "guidance_scale": guidance}))
        result = loaded.generate_batch([row], stream_every_s=None)[0]
        assert np.array_equal(result.codes, want[key][b].numpy()), text


def test_solver_checkpoint_converts_to_the_same_model_as_its_export(convert):
    mono, _, mono_ckpt = convert("mono")
    solver, _, solver_ckpt = convert("solver", "checkpoint.th")
    assert solver_ckpt.layout == "solver" and mono_ckpt.layout == "exported" and mono_ckpt.version == "1.3.0"
    assert solver_ckpt.version is None  # a solver checkpoint does not say which audiocraft wrote it
    assert (solver.folder / "model.safetensors").read_bytes() == (mono.folder / "model.safetensors").read_bytes()
    assert solver.config == mono.config


def test_a_large_model_is_written_in_shards_that_load_as_one(refs, mono, tmp_path, monkeypatch, convert):
    """safetensors serialises a whole file in memory: large models are written in shards (2 GB; here a few KB)."""
    monkeypatch.setattr(ac, "SHARD_BYTES", 200_000)
    converted = ac.convert(mono, ac.plan_of(mono.config, mono.tensors), refs[T5_REPO], refs[CODEC_REPO],
                           tmp_path / "sharded")
    shards = sorted(p.name for p in converted.folder.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert converted.weights_bytes == sum((converted.folder / n).stat().st_size for n in shards)
    meta, want = expected("mono")
    loaded = _load(converted)
    got = _teacher_forced(loaded.model, loaded.processor, meta["texts"], want["codes"], 1)
    single = _load(convert("mono")[0])
    assert torch.equal(got, _teacher_forced(single.model, single.processor, meta["texts"], want["codes"], 1))


def test_the_solver_checkpoint_loads_only_through_the_allow_list(monkeypatch):
    path = FIXTURES / "solver" / "checkpoint.th"
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)  # torch's defaults alone refuse it
    names = ac.allowed_globals()
    for dropped in names:
        if dropped in (dict, list, int):
            continue  # builtins torch allows anyway
        monkeypatch.setattr(ac, "allowed_globals", lambda d=dropped: [n for n in names if n is not d])
        with pytest.raises(InvalidRequest) as refused:
            ac.read_checkpoint(path)
        assert refused.value.code == "unsafe_checkpoint"
        name = dropped[1] if isinstance(dropped, tuple) else getattr(dropped, "__name__", str(dropped))
        assert refused.value.extra["object"].rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]


class Payload:
    """A pickled object that would create a marker file when unpickled (if it ever were)."""

    def __init__(self, marker, how):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "exec":
            return exec, (f"open({self.marker!r}, 'w').close()",)
        if self.how == "open":
            return open, (self.marker, "w")
        if self.how == "partial":
            import functools
            return functools.partial(os.system, f"touch {self.marker}"), ()
        return _Marker, (self.marker,)


class _Marker:
    def __init__(self, marker):
        open(marker, "w").close()


@pytest.mark.parametrize("how", ["os.system", "exec", "open", "partial", "a class of ours"])
@pytest.mark.parametrize("where", ["best_state", "xp.cfg", "beside"])
def test_a_checkpoint_with_any_other_pickled_object_is_refused_and_nothing_runs(tmp_path, how, where):
    marker = tmp_path / "ran"
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    payload = Payload(marker, how)
    if where == "best_state":
        pkg["best_state"]["emb.0.weight"] = payload
    elif where == "xp.cfg":
        pkg["xp.cfg"] = {"config": payload}
    else:
        pkg["history"] = [payload]
    torch.save(pkg, tmp_path / "state_dict.bin")
    with pytest.raises(InvalidRequest) as refused:
        ac.read_checkpoint(tmp_path / "state_dict.bin", "state_dict.bin")
    assert refused.value.code == "unsafe_checkpoint"
    assert refused.value.extra["object"] and refused.value.extra["object"] in refused.value.message
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused_by_name(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(InvalidRequest) as refused:
        ac.read_checkpoint(tmp_path / "model.pt")
    assert refused.value.code == "unsafe_checkpoint" and "torch.nn.modules.linear.Linear" in refused.value.message


@pytest.mark.parametrize("content,code", [
    (b"not a checkpoint at all", "unreadable_checkpoint"),
    (b"", "unreadable_checkpoint"),
])
def test_files_that_are_no_checkpoint(tmp_path, content, code):
    (tmp_path / "state_dict.bin").write_bytes(content)
    with pytest.raises(InvalidRequest) as refused:
        ac.read_checkpoint(tmp_path / "state_dict.bin")
    assert refused.value.code == code


@pytest.mark.parametrize("pkg,code", [
    ({"a": torch.zeros(1)}, "not_an_lm_checkpoint"),
    ([torch.zeros(1)], "not_an_lm_checkpoint"),
    ({"pretrained": "facebook/encodec_32khz", "exported": True}, "not_an_lm_checkpoint"),
    ({"best_state": {"emb.0.weight": "text"}, "xp.cfg": "a: 1", "exported": True}, "not_an_lm_checkpoint"),
    ({"best_state": {"x": torch.zeros(1)}, "xp.cfg": "a: [1, 2", "exported": True}, "invalid_audiocraft_config"),
    ({"best_state": {"x": torch.zeros(1)}, "xp.cfg": "a: &x [1]\nb: *x\n", "exported": True},
     "invalid_audiocraft_config"),
])
def test_other_pickles_are_refused_with_what_they_are(tmp_path, pkg, code):
    torch.save(pkg, tmp_path / "f.bin")
    with pytest.raises(InvalidRequest) as refused:
        ac.read_checkpoint(tmp_path / "f.bin")
    assert refused.value.code == code


@pytest.fixture(scope="module")
def mono():
    return ac.read_checkpoint(FIXTURES / "mono" / "state_dict.bin")


def _with(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


@pytest.mark.parametrize("option,value", [
    ("lm_model", "transformer_lm_magnet"),
    ("conditioners.description.model", "lut"),
    ("conditioners.description.model", "whitespace"),
    ("conditioners.description.model", "clap"),
    ("transformer_lm.layer_scale", 0.0001),
    ("transformer_lm.kv_repeat", 2),
    ("transformer_lm.qk_layer_norm", True),
    ("transformer_lm.qk_layer_norm_cross", True),
    ("transformer_lm.xpos", True),
    ("transformer_lm.positional_embedding", "rope"),
    ("transformer_lm.positional_embedding", "sin_rope"),
    ("transformer_lm.norm_first", False),
    ("transformer_lm.bias_attn", True),
    ("transformer_lm.bias_ff", True),
    ("transformer_lm.bias_proj", True),
    ("transformer_lm.activation", "relu"),
    ("transformer_lm.norm", "rms_norm"),
    ("transformer_lm.past_context", 256),
    ("transformer_lm.max_period", 5000),
    ("transformer_lm.card", 1024),
    ("transformer_lm.n_q", 8),
    ("codebooks_pattern.modeling", "parallel"),
    ("codebooks_pattern.delay.delays", [0, 0, 0, 0]),
    ("codebooks_pattern.delay.flatten_first", 1),
    ("compression_model_checkpoint", "//pretrained/facebook/encodec_24khz"),
    ("compression_model_checkpoint", "//pretrained/dac_44khz"),
    ("sample_rate", 24000),
    ("channels", 3),
    ("fuser.cross_attention_pos_emb", True),
    ("fuser.sum", ["description"]),
    ("fuser.cross", []),
    ("conditioners.description.t5.name", "bert-base-uncased"),
    ("conditioners.description.t5.normalize_text", True),
    ("conditioners.chords", {"model": "chords_emb"}),
])
def test_every_unsupported_option_is_refused_by_name(mono, option, value):
    with pytest.raises(InvalidRequest) as refused:
        ac.plan_of(_with(mono.config, option, value), mono.tensors)
    assert refused.value.code == "unsupported_option"
    assert refused.value.extra["option"] == option
    assert option in refused.value.message


def test_a_refused_option_read_from_the_file_itself(tmp_path):
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    config = yaml.safe_load(pkg["xp.cfg"])
    config["transformer_lm"]["layer_scale"] = 0.1
    pkg["xp.cfg"] = yaml.safe_dump(config)
    torch.save(pkg, tmp_path / "state_dict.bin")
    ckpt = ac.read_checkpoint(tmp_path / "state_dict.bin")
    with pytest.raises(InvalidRequest, match=r"transformer_lm\.layer_scale = 0\.1"):
        ac.plan_of(ckpt.config, ckpt.tensors)


def test_a_codec_trained_with_audiocraft_is_refused(tmp_path, mono):
    torch.save({"best_state": {"w": torch.zeros(1)}, "xp.cfg": "a: 1", "exported": True, "version": "1.3.0"},
               tmp_path / "compression_state_dict.bin")
    with pytest.raises(InvalidRequest) as refused:
        ac.read_compression(tmp_path / "compression_state_dict.bin")
    assert refused.value.code == "unsupported_option" and "trained" in refused.value.message
    with pytest.raises(InvalidRequest, match="encodec_24khz"):
        ac.plan_of(mono.config, mono.tensors, "facebook/encodec_24khz")


def test_stereo_needs_its_codebooks_interleaved(convert):
    stereo = ac.read_checkpoint(FIXTURES / "stereo" / "state_dict.bin")
    assert all(v.dtype == torch.float16 for v in stereo.tensors.values())
    with pytest.raises(InvalidRequest) as refused:
        ac.plan_of(_with(stereo.config, "interleave_stereo_codebooks.use", False), stereo.tensors)
    assert refused.value.extra["option"] == "interleave_stereo_codebooks.use"
    with pytest.raises(InvalidRequest) as refused:
        ac.plan_of(_with(stereo.config, "interleave_stereo_codebooks.per_timestep", True), stereo.tensors)
    assert refused.value.extra["option"] == "interleave_stereo_codebooks.per_timestep"
    converted, plan, _ = convert("stereo")
    assert plan.channels == 2 and plan.codebooks == 8 and converted.config["decoder"]["audio_channels"] == 2


@pytest.mark.parametrize("change,code,key", [
    (lambda t: t.update({"transformer.layers.0.linear1.lora_A.default.weight": torch.zeros(1, 8)}),
     "unmerged_lora", "transformer.layers.0.linear1.lora_A.default.weight"),
    (lambda t: t.update({"transformer.layers.0.layer_scale_1.scale": torch.zeros(8)}),
     "invalid_checkpoint_tensors", "transformer.layers.0.layer_scale_1.scale"),
    (lambda t: t.update({"transformer.layers.0.self_attn.in_proj_weight": torch.zeros(16, 8)}),
     "invalid_checkpoint_tensors", "transformer.layers.0.self_attn.in_proj_weight"),
])
def test_tensors_that_are_not_the_configurations_model_are_refused_by_name(mono, change, code, key):
    tensors = dict(mono.tensors)
    change(tensors)
    plan = ac.plan_of(mono.config, tensors)
    with pytest.raises(InvalidRequest) as refused:
        ac.map_lm(tensors, plan)
    assert refused.value.code == code and refused.value.extra["key"] == key


def test_torchs_own_attention_layout_maps_like_audiocrafts_custom_one(mono):
    """With transformer_lm.custom false (and no memory-efficient attention) audiocraft wraps torch's
    MultiheadAttention: its tensors are saved as self_attn.mha.in_proj_weight, ..."""
    plan = ac.plan_of(mono.config, mono.tensors)
    wrapped = {k.replace("self_attn.", "self_attn.mha.").replace("cross_attention.", "cross_attention.mha."): v
               for k, v in mono.tensors.items()}
    assert any(".mha." in k for k in wrapped)
    assert ac.map_lm(wrapped, plan).keys() == ac.map_lm(mono.tensors, plan).keys()


@pytest.mark.parametrize("drop,shape_of", [("linears.3.weight", None), (None, "transformer.layers.1.linear2.weight")])
def test_missing_or_misshapen_tensors_are_refused_before_anything_is_written(refs, mono, tmp_path, drop, shape_of):
    tensors = dict(mono.tensors)
    if drop:
        del tensors[drop]
    if shape_of:
        tensors[shape_of] = torch.zeros(4, 4)
    ckpt = ac.Checkpoint(tensors=tensors, config=mono.config, layout="exported", version="1.3.0")
    with pytest.raises(InvalidRequest) as refused:
        ac.convert(ckpt, ac.plan_of(mono.config, tensors), refs[T5_REPO], refs[CODEC_REPO], tmp_path / "out")
    assert refused.value.code == "invalid_checkpoint_tensors"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".import-*"))


def test_a_fine_tuned_text_encoder_comes_from_the_checkpoint(refs, mono, tmp_path):
    from safetensors.torch import load_file

    t5 = {k: v for k, v in load_file(str(refs[T5_REPO] / "model.safetensors")).items()
          if k.startswith(("shared.", "encoder."))}
    tuned = {f"{ac.DESCRIPTION}t5.{k}": v + 0.5 for k, v in t5.items()}
    tensors = {**mono.tensors, **tuned}
    plan = ac.plan_of(mono.config, tensors)
    assert plan.text_encoder_finetuned
    converted = ac.convert(ac.Checkpoint(tensors, mono.config, "exported", "1.3.0"), plan, refs[T5_REPO],
                           refs[CODEC_REPO], tmp_path / "tuned")
    written = load_file(str(converted.folder / "model.safetensors"))
    for k, v in t5.items():
        if k != "encoder.embed_tokens.weight":
            assert torch.equal(written[f"text_encoder.{k}"], v + 0.5), k


def test_the_text_projection_must_exist_when_transformers_applies_one(refs, mono, tmp_path):
    tensors = {k: v for k, v in mono.tensors.items() if "output_proj" not in k}
    with pytest.raises(InvalidRequest) as refused:
        ac.convert(ac.Checkpoint(tensors, mono.config, "exported", "1.3.0"), ac.plan_of(mono.config, tensors),
                   refs[T5_REPO], refs[CODEC_REPO], tmp_path / "out")
    assert refused.value.code == "invalid_checkpoint_tensors" and "enc_to_dec_proj" in refused.value.message


def test_a_decoder_as_wide_as_its_text_encoder_is_refused(refs, mono, tmp_path):
    """transformers leaves out the text projection when the widths are equal; audiocraft always applies it."""
    plan = ac.plan_of(_with(mono.config, "transformer_lm.dim", 32), mono.tensors)
    with pytest.raises(InvalidRequest) as refused:
        ac.convert(mono, plan, refs[T5_REPO], refs[CODEC_REPO], tmp_path / "out")
    assert refused.value.extra["option"] == "transformer_lm.dim"


@pytest.mark.parametrize("layout", ["exported", "solver"])
def test_resolver_calls_in_the_configuration_are_kept_as_text_never_called(monkeypatch, tmp_path, layout):
    """${oc.env:...} (audiocraft's dora.dir has one), escaped or not, is never evaluated: the server's environment
    never reaches a configuration the page shows or a refusal's message."""
    from omegaconf import OmegaConf

    monkeypatch.setenv("STUDIO_SECRET_FOR_TEST", "do-not-read")
    raw = {"dora": {"dir": "/x/${oc.env:STUDIO_SECRET_FOR_TEST}"}, "a": 2, "b": "${a}", "c": "${oc.decode:'[1]'}",
           "d": "\\${oc.env:STUDIO_SECRET_FOR_TEST}", "e": "${a}${a}", "f": {"g": "${b}"}}
    config = ac._resolve(copy.deepcopy(raw), "xp.cfg")
    assert config == {**raw, "b": 2, "f": {"g": 2}}
    pkg = torch.load(FIXTURES / "solver" / "checkpoint.th", weights_only=False)  # our own fixture: trusted
    cfg = yaml.safe_load(torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)["xp.cfg"])
    cfg["conditioners"]["description"]["t5"]["name"] = "\\${oc.env:STUDIO_SECRET_FOR_TEST}"
    if layout == "solver":
        pkg["xp.cfg"] = OmegaConf.create(cfg)
    else:
        pkg = {"best_state": pkg["best_state"]["model"], "xp.cfg": yaml.safe_dump(cfg), "exported": True}
    torch.save(pkg, tmp_path / "ckpt.bin")
    ckpt = ac.read_checkpoint(tmp_path / "ckpt.bin")
    with pytest.raises(InvalidRequest) as refused:
        ac.plan_of(ckpt.config, ckpt.tensors)
    assert "do-not-read" not in str(refused.value.to_dict())
    assert refused.value.extra["option"] == "conditioners.description.t5.name"


@pytest.mark.parametrize("make", [
    lambda n: {"k0": "x" * 8, **{f"k{i}": f"${{k{i - 1}}}${{k{i - 1}}}" for i in range(1, n)}},
    lambda n: {"k0": [1], **{f"k{i}": [f"${{k{i - 1}}}", f"${{k{i - 1}}}"] for i in range(1, n)}},
    lambda n: {"k0": {"v": 1}, **{f"k{i}": {"a": f"${{k{i - 1}}}", "b": f"${{k{i - 1}}}"} for i in range(1, n)}},
])
def test_interpolation_bombs_resolve_at_once_and_stay_small(make):
    """Nested references that double at each level (60 levels: 2^60 copies if expanded) are shared, not copied."""
    import time

    started = time.perf_counter()
    config = ac._resolve(make(60), "xp.cfg")
    assert time.perf_counter() - started < 1.0
    assert len(config) == 60


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000,
    "a: " + "{b: " * 200 + "1" + "}" * 200,
    "\n".join(" " * (2 * i) + f"k{i}:" for i in range(300)),
    "k: v\n" * 100_000,
])
def test_configurations_too_deep_or_too_large_are_refused_quickly(tmp_path, text):
    import time

    torch.save({"best_state": {"emb.0.weight": torch.zeros(1)}, "xp.cfg": text, "exported": True},
               tmp_path / "state_dict.bin")
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as refused:
        ac.read_checkpoint(tmp_path / "state_dict.bin")
    assert refused.value.code == "invalid_audiocraft_config"
    assert time.perf_counter() - started < 2.0


def test_references_in_a_loop_are_refused():
    for raw in ({"a": "${b}", "b": "${a}"}, {"a": {"b": "${a}"}}):
        with pytest.raises(InvalidRequest) as refused:
            ac._resolve(raw, "xp.cfg")
        assert refused.value.code == "invalid_audiocraft_config"


def test_the_first_releases_layout_without_exported_or_version_reads(tmp_path, mono):
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    torch.save({"best_state": pkg["best_state"], "xp.cfg": pkg["xp.cfg"]}, tmp_path / "state_dict.bin")
    ckpt = ac.read_checkpoint(tmp_path / "state_dict.bin")
    assert ckpt.layout == "exported" and ckpt.version is None and ckpt.config == mono.config


def test_a_text_projection_of_another_width_than_its_text_encoder_is_refused(mono):
    plan = ac.plan_of(mono.config, mono.tensors)
    ac.check_text_encoder(plan, mono.tensors, {"d_model": 32})
    with pytest.raises(InvalidRequest) as refused:
        ac.check_text_encoder(plan, mono.tensors, {"d_model": 1024})
    assert refused.value.code == "invalid_checkpoint_tensors" and "1024" in refused.value.message


def test_a_configuration_with_a_filled_resolver_cache_loads(tmp_path, mono):
    """OmegaConf keeps resolved ${now:...} values in a defaultdict, which torch's safe loader cannot fill: the
    allow-list's defaultdict is a stand-in that makes a plain dict (the cache is never used)."""
    pkg = torch.load(FIXTURES / "solver" / "checkpoint.th", weights_only=False)  # our own fixture: trusted
    pkg["xp.cfg"]._metadata.resolver_cache = collections.defaultdict(dict, {"now": {("%Y",): "2026"}})
    torch.save(pkg, tmp_path / "checkpoint.th")
    with pytest.raises(Exception, match="Can only SETITEM"):  # what the real defaultdict gets
        with torch.serialization.safe_globals([collections.defaultdict, *ac.allowed_globals()[:6], dict, list,
                                               int]):
            torch.load(tmp_path / "checkpoint.th", weights_only=True)
    ckpt = ac.read_checkpoint(tmp_path / "checkpoint.th")
    assert ckpt.config == ac.read_checkpoint(FIXTURES / "solver" / "checkpoint.th").config
    assert ckpt.config["transformer_lm"] == mono.config["transformer_lm"]


def test_the_allow_list_is_exactly_the_solver_checkpoints_names():
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    names = [n[1] if isinstance(n, tuple) else f"{n.__module__}.{getattr(n, '__qualname__', n)}"
             for n in ac.allowed_globals()]
    assert names[:5] == [f"{c.__module__}.{c.__qualname__}" for c in (DictConfig, ListConfig, ContainerMetadata,
                                                                       Metadata, AnyNode)]
    assert names[5:] == ["typing.Any", "collections.defaultdict", "builtins.dict", "builtins.list", "builtins.int"]
    assert ac.allowed_globals()[5] is typing.Any


def test_a_written_folder_is_whole_or_absent(refs, mono, tmp_path, monkeypatch):
    """A failure while writing (here: the disk refusing the processor files) leaves neither the folder nor its
    temporary copy."""
    import transformers

    def refuse(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.MusicgenProcessor, "save_pretrained", refuse)
    with pytest.raises(OSError):
        ac.convert(mono, ac.plan_of(mono.config, mono.tensors), refs[T5_REPO], refs[CODEC_REPO], tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    shutil.rmtree(tmp_path, ignore_errors=True)
