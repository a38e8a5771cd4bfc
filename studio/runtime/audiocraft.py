"""audiocraft MusicGen checkpoints -> a transformers MusicGen folder that the studio runs like any other model.

audiocraft is not a dependency: its last release pins torch 2.1 and needs stand-ins on ours (NOTES.md), and for
text-to-music its language model computes what transformers' MusicGen computes. So the studio reads its checkpoint
format instead, in four steps, each refusing with a clear error before anything is written:
1. `read_checkpoint`: torch.load with weights_only=True and exactly the OmegaConf and builtin names a solver
   checkpoint needs allowed (never a plain unpickle: a pickle can run code while it loads);
2. `plan_of`: the configuration checked against what transformers' MusicGen can represent, naming the first option
   it cannot;
3. `convert`: the LM's tensors mapped by name (what transformers' own conversion script does; that script needs
   audiocraft and is not in the wheel), the text encoder and codec taken from the official checkpoints the config
   names, checked key by key and shape by shape against the model the config builds (on the meta device);
4. written as safetensors + config + processor files, beside the destination and renamed into place.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import typing
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from studio.errors import InvalidRequest

MAX_CONFIG_CHARS = 256 * 1024  # a real xp.cfg is ~30 KB
CODEC = "facebook/encodec_32khz"  # the only codec transformers' MusicGen has weights for
CODEC_CODEBOOKS, CODEC_CARD, CODEC_RATE = 4, 2048, 32000
T5_MODELS = {"t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b", "google/flan-t5-small", "google/flan-t5-base",
             "google/flan-t5-large", "google/flan-t5-xl", "google/flan-t5-xxl"}  # audiocraft's T5Conditioner.MODELS
DESCRIPTION = "condition_provider.conditioners.description."
SELF_WAV = "condition_provider.conditioners.self_wav."
# Buffers of audiocraft's conditioners that are recomputed, not learned (the chroma's STFT window and filter bank)
DROPPED = re.compile(r"^condition_provider\.conditioners\.self_wav\.chroma\.")
LORA_MARKERS = ("lora_A", "lora_B", "lora_embedding", "base_layer", "lora_magnitude")


def _refuse(message: str, code: str = "unsupported_option", **extra: Any) -> InvalidRequest:
    return InvalidRequest(message, code=code, **extra)


# ---- 1. reading ---------------------------------------------------------------------------------------------------
def _plain_defaultdict(_default_factory: Any = None, *args: Any) -> dict:
    """Stands for collections.defaultdict while a checkpoint loads: OmegaConf keeps its resolver cache in one (filled
    once a ${now:...} was resolved), and torch's safe loader fills only plain dicts. The cache is never used."""
    return dict(*args)


def allowed_globals() -> list:
    """What a solver checkpoint's pickle may name besides tensors and plain containers: its config, an OmegaConf
    DictConfig (measured on audiocraft 1.3.0's solver checkpoints, NOTES.md). Nothing else is let through."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any,
            (_plain_defaultdict, "collections.defaultdict"), dict, list, int]


def safe_load(path: Path, what: str) -> Any:
    """torch.load of a pickled checkpoint without running any code from it: weights_only=True with the allow-list
    above. An object outside it is refused by name ('unsafe_checkpoint'); a file that is no checkpoint at all is
    'unreadable_checkpoint'. Memory-mapped where the format allows (a large model is not read into memory twice)."""
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap can only be used" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if found or ("Weights only load failed" in str(exc) and _looks_pickled(path)):
                name = found.group(1) if found else "an object that is not a tensor or a plain value"
                raise _refuse(f"{what} holds a pickled {name}, which the studio will not load: a pickle can run "
                              "code while it loads, so only tensors, plain values and audiocraft's configuration "
                              "are accepted. Nothing from it was run.", code="unsafe_checkpoint",
                              object=name) from None
            raise _unreadable(what) from None
        except (RuntimeError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, OSError,
                AttributeError, IndexError):
            raise _unreadable(what) from None


def _looks_pickled(path: Path) -> bool:
    """torch.save's zip or a pickle (protocol 2+): its refusal is about what it holds; anything else is no
    checkpoint at all."""
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return head == b"PK" or head[:1] == b"\x80"


def _unreadable(what: str) -> InvalidRequest:
    return _refuse(f"{what} is not a readable PyTorch checkpoint (torch.save's format).",
                   code="unreadable_checkpoint")


@dataclass
class Checkpoint:
    """An audiocraft LM checkpoint as read: its tensors, its configuration (plain, interpolations resolved)."""
    tensors: dict[str, torch.Tensor]
    config: dict
    layout: str  # "exported" (state_dict.bin) or "solver" (a training checkpoint)
    version: str | None


def read_checkpoint(path: Path, what: str = "The checkpoint") -> Checkpoint:
    pkg = safe_load(path, what)
    if not isinstance(pkg, dict):
        raise _not_audiocraft(what)
    if "pretrained" in pkg and "best_state" not in pkg:
        raise _refuse(f"{what} is audiocraft's compression model file (compression_state_dict.bin): import the "
                      "language model's state_dict.bin, with this file beside it.", code="not_an_lm_checkpoint")
    cfg, best = pkg.get("xp.cfg"), pkg.get("best_state")
    if isinstance(cfg, str) and isinstance(best, dict):  # the first MusicGen release had no `exported` flag
        config, layout, tensors = _config_from_yaml(cfg, what), "exported", best
    elif cfg is not None and not isinstance(cfg, str) and isinstance(best, dict):
        fsdp = pkg.get("fsdp_best_state")  # what audiocraft's own export prefers (export_lm)
        state = fsdp if isinstance(fsdp, dict) and fsdp else best
        tensors = state.get("model") if isinstance(state.get("model"), dict) else None
        if tensors is None:
            raise _not_audiocraft(what)
        config, layout = _config_from_dictconfig(cfg, what), "solver"
    else:
        raise _not_audiocraft(what)
    if not tensors or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise _refuse(f"{what}'s model state is not a mapping of names to tensors.", code="not_an_lm_checkpoint")
    version = pkg.get("version")
    return Checkpoint(tensors=dict(tensors), config=config, layout=layout,
                      version=str(version)[:40] if version is not None else None)


def read_compression(path: Path) -> str:
    """The codec a compression_state_dict.bin names. Released MusicGen fine-tunes only name the pretrained
    EnCodec; a codec trained with audiocraft (its own weights) is refused."""
    pkg = safe_load(path, "compression_state_dict.bin")
    if isinstance(pkg, dict) and isinstance(pkg.get("pretrained"), str):
        return pkg["pretrained"].removeprefix("//pretrained/")
    if isinstance(pkg, dict) and "best_state" in pkg:
        raise _refuse("compression_state_dict.bin holds a codec trained with audiocraft: transformers' MusicGen "
                      f"runs {CODEC} only.", option="compression_model", value="a trained EnCodec")
    raise _refuse("compression_state_dict.bin is not audiocraft's compression model file.",
                  code="not_an_lm_checkpoint")


def _not_audiocraft(what: str) -> InvalidRequest:
    return _refuse(f"{what} is not an audiocraft MusicGen checkpoint: expected an exported state_dict.bin "
                   "(best_state, xp.cfg, exported) or a solver checkpoint (best_state.model, xp.cfg).",
                   code="not_an_lm_checkpoint")


MAX_DEPTH = 32  # a real xp.cfg nests 5 levels
MAX_NODES = 100_000  # ... and has about 1,500 values
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")  # ${a.b.c}: a value that is another value of the config


def _config_from_yaml(text: str, what: str) -> dict:
    import yaml

    if len(text) > MAX_CONFIG_CHARS:
        raise _invalid_config(f"{what}'s configuration is {len(text):,} characters, too long for audiocraft's.")
    _check_text_depth(text, what)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # aliases could make a shared node grow when it is copied (a "billion laughs"); audiocraft's
        # OmegaConf.to_yaml never writes one
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=loader)):
            raise _invalid_config(f"{what}'s configuration uses YAML aliases, which audiocraft never writes.")
        raw = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
    except (yaml.YAMLError, RecursionError):
        raise _invalid_config(f"{what}'s configuration (xp.cfg) is not valid YAML.") from None
    return _resolve(raw, what)


def _check_text_depth(text: str, what: str) -> None:
    """Refuse deep nesting before any parser recurses into it: brackets of flow style, indentation of block style."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    indent = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0)
    if deepest > MAX_DEPTH or indent > 4 * MAX_DEPTH:
        raise _invalid_config(f"{what}'s configuration nests deeper than audiocraft's ever do.")


def _config_from_dictconfig(cfg: Any, what: str) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        raise _not_audiocraft(what)
    try:
        raw = OmegaConf.to_container(cfg, resolve=False)  # never resolved by OmegaConf: see _resolve
    except (Exception, RecursionError):  # noqa: BLE001 - a damaged config object from a file
        raise _invalid_config(f"{what}'s configuration cannot be read.") from None
    return _resolve(raw, what)


def _invalid_config(message: str, **extra: Any) -> InvalidRequest:
    return _refuse(message, code="invalid_audiocraft_config", **extra)


def _resolve(raw: Any, what: str) -> dict:
    """The configuration with its references resolved: a value that is exactly ${a.b.c} becomes that value (the
    only interpolations audiocraft's configs use for the model: ${sample_rate}, ${transformer_lm.n_q}, ...).
    Everything else stays text, never evaluated: resolver calls (${oc.env:USER} in dora.dir would read the
    server's environment) and strings built from several parts. OmegaConf's own resolution is not used: nested
    interpolations can grow exponentially, and an escaped resolver call still runs. Bounded in depth, size and hops."""
    if not isinstance(raw, dict):
        raise _invalid_config(f"{what}'s configuration is not a mapping.")
    count = [0]

    def check(node: Any, depth: int) -> None:
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_NODES:
            raise _invalid_config(f"{what}'s configuration is deeper or larger than audiocraft's ever are.")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise _invalid_config(f"{what}'s configuration has a key that is not plain text.")
                check(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                check(value, depth + 1)
        elif not isinstance(node, (str, int, float, bool, type(None))):
            raise _invalid_config(f"{what}'s configuration holds a {type(node).__name__}, not plain values.")

    check(raw, 0)

    done: dict[int, Any] = {}  # each mapping or list resolved once, then shared
    busy: set[int] = set()

    def lookup(dotted: str, hops: int) -> Any:
        node: Any = raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return f"${{{dotted}}}"  # a dangling reference stays text, like any other
            node = node[part]
        if isinstance(node, str) and (ref := _REFERENCE.match(node)):
            if hops >= 8:
                raise _invalid_config(f"{what}'s configuration refers in a loop (${{{dotted}}}).")
            return lookup(ref.group(1), hops + 1)
        return resolve(node)

    def resolve(node: Any) -> Any:
        if isinstance(node, (dict, list)):
            if id(node) in done:
                return done[id(node)]
            if id(node) in busy:
                raise _invalid_config(f"{what}'s configuration refers to a value inside itself.")
            busy.add(id(node))
            out = {k: resolve(v) for k, v in node.items()} if isinstance(node, dict) else [resolve(v) for v in node]
            busy.discard(id(node))
            done[id(node)] = out
            return out
        if isinstance(node, str) and (ref := _REFERENCE.match(node)):
            return lookup(ref.group(1), 0)
        return node

    return resolve(raw)


# ---- 2. what the configuration says -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the checkpoint is, in the terms of transformers' MusicGen."""
    dim: int
    heads: int
    layers: int
    ffn: int
    codebooks: int
    card: int
    channels: int
    melody: bool
    text_encoder: str  # the T5 checkpoint its conditioner names
    text_encoder_finetuned: bool
    segment_s: float
    guidance: float
    top_k: int
    top_p: float
    temperature: float
    chroma: dict | None = None  # melody: n_chroma, n_fft
    notes: tuple[str, ...] = ()

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "notes" and v is not None}


_MISSING = object()


def _get(cfg: dict, dotted: str, default: Any = _MISSING) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise _refuse(f"The configuration has no {dotted}: it is not an audiocraft MusicGen configuration.",
                              code="invalid_audiocraft_config", option=dotted)
            return default
        node = node[part]
    return node


def _require(cfg: dict, dotted: str, allowed: Any, what: str, default: Any = _MISSING) -> Any:
    """The option's value when transformers' MusicGen can represent it; a refusal naming the option otherwise."""
    value = _get(cfg, dotted, default)
    ok = value in allowed if isinstance(allowed, (set, tuple)) else value == allowed
    if not ok:
        expected = " or ".join(repr(a) for a in allowed) if isinstance(allowed, (set, tuple)) else repr(allowed)
        raise _refuse(f"Unsupported option {dotted} = {value!r}: {what} (transformers' MusicGen needs {expected}).",
                      option=dotted, value=_plain(value))
    return value


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)[:200]


def _int_option(cfg: dict, dotted: str, low: int, high: int) -> int:
    value = _get(cfg, dotted)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(f"The configuration's {dotted} is {value!r}, expected a whole number from {low} to {high}.",
                      code="invalid_audiocraft_config", option=dotted, value=_plain(value))
    return value


def plan_of(config: dict, tensors: dict[str, torch.Tensor], codec: str | None = None) -> Plan:
    """Check every option transformers' MusicGen cannot represent, the first unsupported one named."""
    lm = "transformer_lm"
    _require(config, "lm_model", "transformer_lm", "only MusicGen's transformer LM converts (MAGNeT and other "
             "language models do not)")
    checkpoint_codec = str(_get(config, "compression_model_checkpoint", "")).removeprefix("//pretrained/")
    for named in filter(None, (checkpoint_codec, codec)):
        if named != CODEC:
            raise _refuse(f"Unsupported codec {named} (compression_model_checkpoint): transformers' MusicGen runs "
                          f"{CODEC} only.",
                          option="compression_model_checkpoint", value=named)
    _require(config, "sample_rate", CODEC_RATE, f"{CODEC} works at 32 kHz")
    channels = _require(config, "channels", (1, 2), "MusicGen is mono or stereo")
    if channels == 2:
        _require(config, "interleave_stereo_codebooks.use", True, "stereo MusicGen interleaves left and right "
                 "codebooks", default=False)
        _require(config, "interleave_stereo_codebooks.per_timestep", False, "left and right codebooks interleave "
                 "per codebook", default=False)
    n_q = _require(config, f"{lm}.n_q", CODEC_CODEBOOKS * channels, f"{CODEC} has {CODEC_CODEBOOKS} codebooks per "
                   "channel")
    card = _require(config, f"{lm}.card", CODEC_CARD, f"{CODEC}'s codebooks have {CODEC_CARD} entries")
    _require(config, "codebooks_pattern.modeling", "delay", "MusicGen's codebooks follow the delay pattern")
    delays = [k // channels for k in range(n_q)]  # stereo: left and right share each delay
    _require(config, "codebooks_pattern.delay.delays", (delays,), "the delay pattern is one step per codebook")
    _require(config, "codebooks_pattern.delay.flatten_first", 0, "no flattened first codebook", default=0)
    _require(config, "codebooks_pattern.delay.empty_initial", 0, "no empty initial steps", default=0)
    for option, allowed, what in [
            ("norm_first", True, "pre-norm"), ("bias_ff", False, "no biases"), ("bias_attn", False, "no biases"),
            ("bias_proj", False, "no biases"), ("activation", "gelu", "GELU"), ("norm", "layer_norm", "LayerNorm"),
            ("positional_embedding", "sin", "sinusoidal positions"), ("layer_scale", None, "no layer scale"),
            ("xpos", False, "no xpos"), ("kv_repeat", 1, "no key/value repeat"),
            ("qk_layer_norm", False, "no query/key norm"), ("qk_layer_norm_cross", False, "no query/key norm"),
            ("causal", True, "a causal LM"), ("past_context", None, "full attention to the past")]:
        _require(config, f"{lm}.{option}", allowed, what)
    _require(config, f"{lm}.max_period", (10000, 10000.0), "sinusoidal positions of period 10000", default=10000)
    _require(config, f"{lm}.positional_scale", (1, 1.0), "unscaled positions", default=1.0)
    dim = _int_option(config, f"{lm}.dim", 1, 16384)
    heads = _int_option(config, f"{lm}.num_heads", 1, 256)
    layers = _int_option(config, f"{lm}.num_layers", 1, 256)
    scale = _get(config, f"{lm}.hidden_scale")
    if dim % heads:
        raise _refuse(f"The configuration's {lm}.dim ({dim}) is not a multiple of num_heads ({heads}).",
                      code="invalid_audiocraft_config", option=f"{lm}.dim")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 64:
        raise _refuse(f"The configuration's {lm}.hidden_scale is {scale!r}.", code="invalid_audiocraft_config",
                      option=f"{lm}.hidden_scale")

    notes: list[str] = []
    fuser = _get(config, "fuser", {}) or {}
    _require(config, "fuser.cross_attention_pos_emb", False, "no positional embedding on the conditions",
             default=False)
    for kind in ("sum", "input_interpolate"):
        _require(config, f"fuser.{kind}", ([], None), "conditions reach the LM by cross-attention or as a prefix",
                 default=[])
    conditioners = _get(config, "conditioners")
    if not isinstance(conditioners, dict):
        raise _refuse("The configuration's conditioners are not a mapping.", code="invalid_audiocraft_config",
                      option="conditioners")
    melody = "self_wav" in conditioners
    if set(conditioners) - {"description", "self_wav"}:
        other = sorted(set(conditioners) - {"description", "self_wav"})[0]
        kind = conditioners[other].get("model") if isinstance(conditioners[other], dict) else None
        raise _refuse(f"Unsupported conditioner conditioners.{other}" + (f" ({kind})" if kind else "") + ": "
                      "transformers' MusicGen is conditioned on text (description) and, for MusicGen Melody, a "
                      "melody (self_wav) only.", option=f"conditioners.{other}", value=_plain(kind or other))
    _require(config, "conditioners.description.model", "t5", "text goes through T5 (LUT, whitespace and CLAP "
             "conditioners have no transformers equivalent)")
    t5 = _require(config, "conditioners.description.t5.name", T5_MODELS, "one of the T5 checkpoints audiocraft "
                  "knows")
    _require(config, "conditioners.description.t5.normalize_text", False, "the text is given to T5 as typed "
             "(audiocraft's normalisation needs spaCy)", default=False)
    finetuned = any(k.startswith(DESCRIPTION + "t5.") for k in tensors)

    chroma = None
    if melody:
        _require(config, "fuser.cross", ([], None), "MusicGen Melody puts its conditions before the sequence")
        prepend = _get(config, "fuser.prepend")
        if sorted(prepend or []) != ["description", "self_wav"]:
            raise _refuse(f"Unsupported option fuser.prepend = {prepend!r}: MusicGen Melody prepends the melody and "
                          "the text.", option="fuser.prepend", value=_plain(prepend))
        _require(config, "conditioners.self_wav.model", "chroma_stem", "the melody is a chromagram")
        n_chroma = _require(config, "conditioners.self_wav.chroma_stem.n_chroma", 12, "12 pitch classes")
        radix = _require(config, "conditioners.self_wav.chroma_stem.radix2_exp", 14, "a 2^14-point FFT")
        _require(config, "conditioners.self_wav.chroma_stem.argmax", True, "the chromagram keeps the loudest pitch "
                 "class of each frame")
        chroma = {"n_chroma": n_chroma, "n_fft": 2 ** radix}
        notes.append("audiocraft separates the melody's drums and bass away (demucs) before its chromagram; the "
                     "studio, like transformers, takes the chromagram of the clip as given: give a melody without "
                     "drums for the closest result.")
    else:
        _require(config, "fuser.cross", (["description"],), "the text reaches the LM by cross-attention")
        _require(config, "fuser.prepend", ([], None), "nothing is put before the sequence", default=[])
    if _get(config, f"{lm}.two_step_cfg", False):
        notes.append("It was set to guide in two passes (two_step_cfg); the studio guides in one batched pass, "
                     "which differs only in padding.")
    segment = _get(config, "dataset.segment_duration", 30.0)
    segment = float(segment) if isinstance(segment, (int, float)) and not isinstance(segment, bool) and \
        segment > 0 else 30.0
    guidance = _get(config, "classifier_free_guidance.inference_coef", 3.0)
    gen = _get(config, "generate.lm", {}) or {}
    return Plan(dim=dim, heads=heads, layers=layers, ffn=int(scale * dim), codebooks=n_q, card=card,
                channels=channels, melody=melody, text_encoder=t5, text_encoder_finetuned=finetuned,
                segment_s=min(segment, 60.0), guidance=_number(guidance, 3.0, 0.0, 10.0),
                top_k=int(_number(gen.get("top_k"), 250, 0, 2048)), top_p=_number(gen.get("top_p"), 0.0, 0.0, 1.0),
                temperature=_number(gen.get("temp"), 1.0, 0.05, 5.0), chroma=chroma, notes=tuple(notes))


def _number(value: Any, default: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        return default
    return float(value)


def check_text_encoder(plan: Plan, tensors: dict[str, torch.Tensor], t5_config: dict) -> None:
    """The checkpoint's text projection against the text encoder's width, from its config.json alone: read before
    its weights are downloaded (t5-11b's are 45 GB)."""
    width = t5_config.get("d_model")
    proj = tensors.get(DESCRIPTION + "output_proj.weight")
    if proj is not None and proj.ndim == 2 and proj.shape[1] != width:
        raise _refuse(f"The checkpoint's text projection takes {proj.shape[1]} features, but {plan.text_encoder} "
                      f"gives {width}: it was not trained with the text encoder its configuration names.",
                      code="invalid_checkpoint_tensors", key=DESCRIPTION + "output_proj.weight")


# ---- 3. mapping -----------------------------------------------------------------------------------------------------
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")
_PARTS = {"self_attn.out_proj.weight": "self_attn.out_proj.weight",
          "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight",
          "linear1.weight": "fc1.weight", "linear2.weight": "fc2.weight",
          "norm1.weight": "self_attn_layer_norm.weight", "norm1.bias": "self_attn_layer_norm.bias",
          "norm2.weight": "final_layer_norm.weight", "norm2.bias": "final_layer_norm.bias",
          "norm_cross.weight": "encoder_attn_layer_norm.weight", "norm_cross.bias": "encoder_attn_layer_norm.bias"}
_FUSED = {"self_attn.in_proj_weight": "self_attn", "cross_attention.in_proj_weight": "encoder_attn"}


def map_lm(tensors: dict[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """audiocraft LM names -> MusicgenForConditionalGeneration names (the fused attention projection split into
    q, k, v; the conditioners' output projections to enc_to_dec_proj / audio_enc_to_dec_proj; a fine-tuned T5 to
    the text encoder). Unknown names are refused: a silently dropped tensor would be a different model."""
    lora = sorted(k for k in tensors if any(m in k for m in LORA_MARKERS))
    if lora:
        raise _refuse(f"The checkpoint holds unmerged LoRA layers ({lora[0]}, ...): merge the adapter into its "
                      "base in audiocraft (merge_and_unload) and import the merged checkpoint. PEFT adapters "
                      "trained on audiocraft's module names do not apply to the converted model.",
                      code="unmerged_lora", key=lora[0])
    out: dict[str, torch.Tensor] = {}
    dec = "decoder.model.decoder."
    for name, value in tensors.items():
        name_ = name.replace(".mha.", ".")  # audiocraft's non-custom attention wraps torch's MultiheadAttention
        layer = _LAYER.match(name_)
        if name_.startswith("emb.") and name_.endswith(".weight"):
            out[f"{dec}embed_tokens.{name_[4:]}"] = value
        elif name_.startswith("linears.") and name_.endswith(".weight"):
            out[f"decoder.lm_heads.{name_[8:]}"] = value
        elif name_ in ("out_norm.weight", "out_norm.bias"):
            out[f"{dec}layer_norm.{name_.split('.')[1]}"] = value
        elif layer and layer.group(2) in _FUSED:
            prefix = f"{dec}layers.{layer.group(1)}.{_FUSED[layer.group(2)]}"
            if value.ndim != 2 or value.shape[0] != 3 * plan.dim:
                raise _refuse(f"{name} has shape {tuple(value.shape)}, expected ({3 * plan.dim}, {plan.dim}).",
                              code="invalid_checkpoint_tensors", key=name)
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{prefix}.{proj}.weight"] = value[i * plan.dim:(i + 1) * plan.dim]
        elif layer and layer.group(2) in _PARTS:
            out[f"{dec}layers.{layer.group(1)}.{_PARTS[layer.group(2)]}"] = value
        elif name_.startswith(DESCRIPTION + "output_proj."):
            out["enc_to_dec_proj." + name_.rsplit(".", 1)[1]] = value
        elif name_.startswith(DESCRIPTION + "t5."):
            inner = name_[len(DESCRIPTION + "t5."):]
            if inner.startswith(("shared.", "encoder.")):
                out["text_encoder." + inner] = value
        elif name_.startswith(SELF_WAV + "output_proj.") and plan.melody:
            out["audio_enc_to_dec_proj." + name_.rsplit(".", 1)[1]] = value
        elif DROPPED.match(name_):
            continue
        else:
            raise _refuse(f"The checkpoint holds {name}, which has no place in transformers' MusicGen: it was "
                          "made with options the studio does not know.", code="invalid_checkpoint_tensors", key=name)
    return out


# ---- 4. converting and writing -----------------------------------------------------------------------------------
@dataclass
class Converted:
    folder: Path
    config: dict  # config.json as written
    weights_bytes: int
    tensors: int
    notes: list[str] = field(default_factory=list)


Progress = Callable[[str, float | None], None]  # (message, fraction of this step)


def convert(ckpt: Checkpoint, plan: Plan, text_encoder_dir: Path, codec_dir: Path, dest: Path,
            progress: Progress = lambda _m, _f: None) -> Converted:
    """Write the transformers folder for `ckpt` at `dest` (which must not exist): written beside it under a
    dot-name (removed at start-up if the studio is killed meanwhile) and renamed into place whole."""
    from transformers import AutoTokenizer, EncodecFeatureExtractor, GenerationConfig, MusicgenProcessor

    from studio.runtime.chroma import ChromaSettings
    from studio.runtime.hf_logging import quiet_musicgen_token_layout
    from studio.runtime.tiny import MelodyProcessorFiles

    quiet_musicgen_token_layout()
    config, cls = _model_config(plan, text_encoder_dir, codec_dir)
    progress("Mapping the language model's tensors", 0.1)
    weights = map_lm(ckpt.tensors, plan)
    if not plan.text_encoder_finetuned:
        t5 = _load_weights(text_encoder_dir, plan.text_encoder)
        weights.update({f"text_encoder.{k}": v for k, v in t5.items()
                        if k.startswith(("shared.", "encoder.")) and k != "encoder.embed_tokens.weight"})
    weights.pop("text_encoder.encoder.embed_tokens.weight", None)  # tied to shared.weight (saved once)
    codec = _load_weights(codec_dir, CODEC)
    weights.update({f"audio_encoder.{k}": v for k, v in codec.items()})
    progress("Checking every tensor against the model the configuration builds", 0.4)
    _check_against(cls, config, weights, plan)
    notes = list(plan.notes)
    if "enc_to_dec_proj.weight" not in weights and plan.dim != config.text_encoder.d_model:
        raise _refuse("The checkpoint has no text projection (conditioners.description.output_proj).",
                      code="invalid_checkpoint_tensors", key=DESCRIPTION + "output_proj.weight")

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=dest.parent))
    try:
        size = _write_shards(weights, tmp, lambda f: progress("Writing safetensors weights", 0.5 + 0.4 * f))
        config.save_pretrained(tmp)
        GenerationConfig(decoder_start_token_id=plan.card, pad_token_id=plan.card, bos_token_id=plan.card,
                         do_sample=True, guidance_scale=plan.guidance, top_k=plan.top_k, top_p=plan.top_p,
                         temperature=plan.temperature,
                         max_length=int(plan.segment_s * config.audio_encoder.frame_rate) + plan.codebooks,
                         ).save_pretrained(tmp)
        progress("Writing the processor (tokenizer, feature extractor)", 0.9)
        tokenizer = AutoTokenizer.from_pretrained(text_encoder_dir)
        if plan.melody:
            MelodyProcessorFiles(tokenizer, ChromaSettings()).save_pretrained(tmp)
        else:
            MusicgenProcessor(feature_extractor=EncodecFeatureExtractor.from_pretrained(codec_dir),
                              tokenizer=tokenizer).save_pretrained(tmp)
        if dest.exists():
            raise _refuse(f"{dest} already exists.", code="model_exists")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Converted(folder=dest, config=json.loads((dest / "config.json").read_text()), weights_bytes=size,
                     tensors=len(weights), notes=notes)


SHARD_BYTES = 2 * 10**9


def _write_shards(weights: dict[str, torch.Tensor], folder: Path, progress: Callable[[float], None]) -> int:
    """Write `weights` as safetensors in shards of at most SHARD_BYTES (one model.safetensors when it fits, else
    model-0000i-of-0000n.safetensors + model.safetensors.index.json, which from_pretrained reads): safetensors
    serialises a file's tensors in memory before writing, so a shard, not the whole model, is what that costs.
    The bytes written."""
    from safetensors.torch import save_file

    shards: list[list[str]] = [[]]
    used = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    total = 0
    for i, (file, keys) in enumerate(zip(names, shards)):
        save_file({k: weights[k].contiguous() for k in keys}, str(folder / file), metadata={"format": "pt"})
        total += (folder / file).stat().st_size
        progress((i + 1) / len(shards))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(w.numel() * w.element_size() for w in weights.values())},
                 "weight_map": {k: file for file, keys in zip(names, shards) for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def _load_weights(folder: Path, repo: str) -> dict[str, torch.Tensor]:
    """A checkpoint folder's safetensors weights, one file or shards named by model.safetensors.index.json."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise _refuse(f"{repo} has no safetensors weights in {folder}.", code="missing_weights")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        weights.update(load_file(str(folder / Path(name).name)))
    return weights


def _model_config(plan: Plan, text_encoder_dir: Path, codec_dir: Path):
    import transformers

    t5 = json.loads((Path(text_encoder_dir) / "config.json").read_text())
    codec = json.loads((Path(codec_dir) / "config.json").read_text())
    if codec.get("codebook_size", CODEC_CARD) != plan.card:
        raise _refuse(f"{CODEC} has {codec.get('codebook_size')} codes per codebook, the checkpoint {plan.card}.",
                      option="transformer_lm.card", value=plan.card)
    frame_rate = math.ceil(codec.get("sampling_rate", CODEC_RATE) / math.prod(codec.get("upsampling_ratios")
                                                                              or [8, 5, 4, 2]))
    positions = max(2048, int(plan.segment_s * frame_rate) + 2 * plan.codebooks)
    if plan.dim == t5.get("d_model"):
        # transformers only projects the text states when the widths differ; audiocraft always does
        raise _refuse(f"The LM's width ({plan.dim}) equals {plan.text_encoder}'s ({t5.get('d_model')}): "
                      "transformers' MusicGen then leaves out the text projection audiocraft applies, so the "
                      "converted model would not be the same.", option="transformer_lm.dim", value=plan.dim)
    decoder = dict(vocab_size=plan.card, max_position_embeddings=positions, num_hidden_layers=plan.layers,
                   ffn_dim=plan.ffn, num_attention_heads=plan.heads, layerdrop=0.0, use_cache=True,
                   activation_function="gelu", hidden_size=plan.dim, dropout=0.0, attention_dropout=0.0,
                   activation_dropout=0.0, scale_embedding=False, num_codebooks=plan.codebooks,
                   audio_channels=plan.channels, pad_token_id=plan.card, bos_token_id=plan.card,
                   decoder_start_token_id=plan.card, tie_word_embeddings=False)
    t5 = {k: v for k, v in t5.items() if k not in ("architectures", "transformers_version")}
    if plan.melody:
        from studio.runtime.chroma import ChromaSettings

        chroma = ChromaSettings()
        dec = transformers.MusicgenMelodyDecoderConfig(**decoder)
        config = transformers.MusicgenMelodyConfig(
            text_encoder=t5, audio_encoder=codec, decoder=dec.to_dict(), num_chroma=plan.chroma["n_chroma"],
            chroma_length=chroma.frames(chroma.chunk_length_s * chroma.sample_rate))
        cls = transformers.MusicgenMelodyForConditionalGeneration
        config.null_melody = "zeros"  # audiocraft's unconditional melody (studio/runtime/decode.py reads it)
    else:
        dec = transformers.MusicgenDecoderConfig(**decoder)
        config = transformers.MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=dec.to_dict())
        cls = transformers.MusicgenForConditionalGeneration
    config.decoder.decoder_start_token_id = plan.card
    config.architectures = [cls.__name__]
    return config, cls


def _check_against(cls, config, weights: dict[str, torch.Tensor], plan: Plan) -> None:
    """Every tensor the model has, of its shape, and nothing else (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = cls(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected.pop("text_encoder.encoder.embed_tokens.weight", None)  # tied to shared.weight
    missing = sorted(set(expected) - set(weights))
    if missing:
        source = "the checkpoint" if missing[0].startswith(("decoder.", "enc_to_dec", "audio_enc")) else \
            f"{plan.text_encoder} or {CODEC}"
        raise _refuse(f"{len(missing)} tensor(s) the model needs are not in {source}: {missing[0]}, ...",
                      code="invalid_checkpoint_tensors", key=missing[0])
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise _refuse(f"{extra[0]} has no place in the converted model.", code="invalid_checkpoint_tensors",
                      key=extra[0])
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise _refuse(f"{key} has shape {tuple(weights[key].shape)}; the configuration's model needs {shape}.",
                          code="invalid_checkpoint_tensors", key=key)


def file_sha256(path: Path, on_bytes: Callable[[int, int], None] = lambda _d, _t: None) -> str:
    total, done, digest = path.stat().st_size, 0, hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            on_bytes(done, total)
    return digest.hexdigest()
