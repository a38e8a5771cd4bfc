"""How an adapter's training configuration is shown: grouped hyperparameters with a tooltip each.

Pure functions (dicts in, HTML out) so they are easy to test:

    fmt_value(v)                              one value for a person: 1e-4, 3, 0.1235, Yes/No, "a, b", Not set
    is_dpo(training_config)                   preference-trained (DPO) or not
    config_groups(training_config, lora)      [ConfigGroup(name, rows)] in the order Model, LoRA, Training, Hardware,
                                              Checkpointing, DPO (only for DPO), Other (keys we do not know)
    config_view_html(training_config, lora)   the whole view; a clear message when there is no training configuration
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Iterable

NOT_SET = "Not set"
NO_TRAINING_CONFIG = ("No training configuration was recorded for this adapter: it was imported without the "
                      "studio's training record (training_provenance.json). Only its LoRA settings, read from "
                      "adapter_config.json, are known.")
GROUP_ORDER = ("Model", "LoRA", "Training", "Hardware", "Checkpointing", "DPO", "Other")
# nested sections of a training configuration whose keys are read as if they were at the top level
SECTION_KEYS = {"model", "lora", "peft", "training", "train", "trainer", "optim", "hardware", "checkpointing",
                "checkpoint", "checkpoints", "dpo", "preference"}


@dataclass(frozen=True)
class Param:
    key: str  # canonical key
    label: str
    tip: str  # what it does and typical values
    aliases: tuple[str, ...] = ()
    always: bool = True  # shown as "Not set" when missing (else only when present)


@dataclass(frozen=True)
class ConfigRow:
    key: str  # the key as found in the configuration (the canonical key when missing)
    label: str
    value: str  # formatted for a person
    tip: str


@dataclass(frozen=True)
class ConfigGroup:
    name: str
    rows: list[ConfigRow]


PARAMS: dict[str, list[Param]] = {
    "Model": [
        Param("base_model", "Base model", "The model the adapter was trained on. An adapter only works on that "
              "model (same layers, same shapes, same weights).", ("base_model_name_or_path", "model_id", "model")),
        Param("base_model_revision", "Base model revision", "The exact version (commit or tag) of the base model's "
              "weights used for training.", ("revision", "model_revision")),
        Param("segment_duration_s", "Clip duration", "Length of the training clips in seconds. MusicGen was "
              "trained on 30 s segments; 5 to 30 s is common for fine-tuning.",
              ("segment_duration", "clip_duration_s", "clip_duration", "duration_s", "duration", "max_duration_s")),
        Param("sample_rate", "Sample rate", "Audio sample rate the clips were resampled to (Hz). MusicGen's "
              "EnCodec uses 32000.", ("sampling_rate",), always=False),
    ],
    "LoRA": [
        Param("r", "Rank (r)", "Size of the low-rank update matrices: more capacity and a bigger file as it grows. "
              "Typical: 4 to 64 (8 or 16 are common).", ("rank", "lora_r", "lora_rank")),
        Param("lora_alpha", "Alpha", "Scales the LoRA update by alpha / r. Typical: equal to r, or 2 × r.",
              ("alpha",)),
        Param("lora_dropout", "Dropout", "Dropout on the LoRA input during training, against over-fitting. "
              "Typical: 0 to 0.1.", ("dropout",)),
        Param("target_modules", "Target modules", "The layers that get LoRA matrices. For MusicGen: the "
              "decoder's attention projections (q, k, v, out) and often its feed-forward layers fc1 and fc2.",
              ("targets", "lora_target_modules")),
        Param("bias", "Bias", "Which biases are trained along with the adapter: none (usual), lora_only or all.",
              ("lora_bias_mode",)),
        Param("use_rslora", "Rank-stabilised scaling", "rsLoRA: scales by alpha / √r instead of alpha / r, which "
              "helps at high ranks. Usually off.", always=False),
        Param("use_dora", "DoRA", "Weight-decomposed LoRA: trains the magnitude and direction of the weights "
              "separately. Usually off.", always=False),
        Param("init_lora_weights", "Initialisation", "How the LoRA matrices start. True: B = 0, so the adapter "
              "starts as a no-op (usual); also gaussian, pissa, olora, loftq.", always=False),
        Param("modules_to_save", "Fully trained modules", "Modules trained and saved in full besides the LoRA "
              "matrices (an output head, for example). Usually none.", always=False),
        Param("layers_to_transform", "Layers", "Only these layer numbers get LoRA matrices (default: all).",
              always=False),
        Param("rank_pattern", "Rank per layer", "Ranks that differ from r for some layers.", always=False),
        Param("alpha_pattern", "Alpha per layer", "Alphas that differ from lora_alpha for some layers.",
              always=False),
        Param("peft_type", "Adapter type", "The PEFT method: LORA for every adapter the studio accepts.",
              always=False),
    ],
    "Training": [
        Param("method", "Method", "sft: supervised fine-tuning on audio with its text; dpo: preference "
              "optimisation on pairs of preferred and rejected clips.", ("training_method", "objective")),
        Param("learning_rate", "Learning rate", "Step size of the optimiser. Typical for LoRA: 1e-4 to 5e-4.",
              ("lr",)),
        Param("epochs", "Epochs", "Passes over the training set. Typical: 3 to 20 for a small music dataset.",
              ("num_epochs", "num_train_epochs", "n_epochs")),
        Param("max_steps", "Max steps", "Optimiser steps in total; when set it usually overrides epochs.",
              ("steps", "total_steps", "num_steps", "train_steps"), always=False),
        Param("batch_size", "Batch size", "Clips per step on each device, before accumulation. Typical: 1 to 8 "
              "on one GPU.", ("per_device_train_batch_size", "train_batch_size")),
        Param("gradient_accumulation_steps", "Gradient accumulation", "Batches summed before each optimiser "
              "step: the effective batch is batch size × this. Typical: 1 to 16.",
              ("grad_accum", "gradient_accumulation", "grad_accumulation_steps", "accumulation_steps")),
        Param("optimizer", "Optimiser", "The optimisation algorithm. AdamW is the usual choice for LoRA.",
              ("optim", "optimiser")),
        Param("lr_scheduler", "LR schedule", "How the learning rate changes over training: constant, linear or "
              "cosine decay (cosine is common).", ("lr_scheduler_type", "scheduler", "schedule")),
        Param("warmup_steps", "Warm-up steps", "Steps over which the learning rate ramps up from 0. Typical: up "
              "to 10 % of training.", ("num_warmup_steps",)),
        Param("warmup_ratio", "Warm-up ratio", "Share of training spent ramping the learning rate up from 0. "
              "Typical: 0 to 0.1.", always=False),
        Param("weight_decay", "Weight decay", "Penalty pulling the trained weights towards 0, against "
              "over-fitting. Typical: 0 to 0.01.", ("wd",)),
        Param("max_grad_norm", "Gradient clipping", "Gradients are scaled down to this norm when larger, for "
              "stability. Typical: 1.0.", ("grad_clip", "gradient_clipping", "clip_grad_norm")),
        Param("cfg_dropout", "Text dropout", "Share of clips trained without their text so classifier-free "
              "guidance keeps working. audiocraft uses 0.3.",
              ("condition_dropout", "text_dropout", "cond_dropout", "cfg_drop_prob"), always=False),
        Param("adam_beta1", "Adam beta1", "Decay of the optimiser's gradient average. Typical: 0.9.",
              always=False),
        Param("adam_beta2", "Adam beta2", "Decay of the optimiser's squared-gradient average. Typical: 0.999.",
              always=False),
        Param("adam_epsilon", "Adam epsilon", "Small number added for numerical stability. Typical: 1e-8.",
              ("eps", "adam_eps"), always=False),
        Param("seed", "Seed", "Random seed of the run: the same seed and data give the same adapter.",
              ("random_seed",)),
        Param("dataset", "Dataset", "The data the adapter was trained on.",
              ("training_dataset", "dataset_name", "train_dataset"), always=False),
        Param("num_samples", "Training clips", "How many clips the training set held.",
              ("num_examples", "dataset_size", "train_samples"), always=False),
    ],
    "Hardware": [
        Param("device", "Device", "Where training ran: cuda (a GPU), mps (Apple) or cpu.", ("accelerator",)),
        Param("dtype", "Precision", "Number format of the weights and the maths: float32, or bfloat16 / float16, "
              "which halve memory on a GPU.", ("torch_dtype", "precision", "mixed_precision")),
        Param("gradient_checkpointing", "Gradient checkpointing", "Recomputes activations during the backward "
              "pass: less memory, roughly 20 to 30 % slower.", ("grad_checkpointing",)),
        Param("fp16", "float16 training", "Mixed precision in float16 (older GPUs).", always=False),
        Param("bf16", "bfloat16 training", "Mixed precision in bfloat16 (recent GPUs).", always=False),
        Param("gpu", "GPU", "The GPU the run used.", ("gpu_name",), always=False),
        Param("num_gpus", "GPUs", "How many GPUs the run used.", ("n_gpus", "world_size"), always=False),
        Param("num_threads", "CPU threads", "CPU threads used by the maths library.", ("torch_threads",),
              always=False),
        Param("num_workers", "Data loader workers", "Processes preparing batches in parallel.",
              ("dataloader_num_workers",), always=False),
    ],
    "Checkpointing": [
        Param("save_steps", "Save every", "Steps between saved checkpoints.",
              ("save_every", "save_every_steps", "checkpoint_every", "checkpoint_steps", "save_interval")),
        Param("save_total_limit", "Checkpoints kept", "How many checkpoints are kept; older ones are deleted.",
              ("keep_last", "max_checkpoints", "keep_checkpoints", "keep_last_n")),
        Param("output_dir", "Output folder", "Where the checkpoints were written.", ("checkpoint_dir", "save_dir"),
              always=False),
        Param("resume_from_checkpoint", "Resumed from", "The checkpoint this run continued from, if any.",
              ("resume_from", "resume"), always=False),
        Param("eval_steps", "Evaluate every", "Steps between evaluations on held-out clips.", ("eval_every",),
              always=False),
        Param("logging_steps", "Log every", "Steps between logged losses.", ("log_every", "log_steps"),
              always=False),
    ],
    "DPO": [
        Param("beta", "Beta", "How strongly the adapter is held near the reference (base) model: a smaller beta "
              "lets it move further from it. Typical: 0.1 to 0.5.", ("dpo_beta",)),
        Param("loss_type", "Loss", "The preference loss: sigmoid (standard DPO), hinge or ipo.",
              ("dpo_loss", "dpo_loss_type")),
        Param("label_smoothing", "Label smoothing", "Assumed share of wrongly labelled preference pairs "
              "(conservative DPO). Typical: 0 to 0.1.", ("dpo_label_smoothing",), always=False),
        Param("reference_free", "Reference-free", "Ignore the reference model (compare the adapter's "
              "likelihoods only). Usually off.", ("dpo_reference_free",), always=False),
        Param("preference_dataset", "Preference pairs", "The pairs of preferred and rejected clips trained on.",
              ("preference_data", "pairs_dataset"), always=False),
    ],
}
DPO_METHODS = {"dpo", "preference", "ipo", "preference_optimization"}
# PEFT's defaults in adapter_config.json: a row only when the adapter differs from them
LORA_FILE_DEFAULTS: dict[str, Any] = {"use_rslora": False, "use_dora": False, "init_lora_weights": True,
                                      "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
                                      "alpha_pattern": {}, "peft_type": "LORA"}


def _index(params: dict[str, list[Param]]) -> dict[str, tuple[str, Param]]:
    """Every key and alias (lower case) -> (group, parameter)."""
    index: dict[str, tuple[str, Param]] = {}
    for group, group_params in params.items():
        for param in group_params:
            for key in (param.key, *param.aliases):
                index.setdefault(key.lower(), (group, param))
    return index


_BY_KEY = _index(PARAMS)
LORA_FILE_KEYS = frozenset(p.key for p in PARAMS["LoRA"])  # keys of adapter_config.json worth showing


# ---- values ------------------------------------------------------------------------------------------------------
def fmt_number(x: float) -> str:
    """1e-4 -> '1e-4', 0.0001 -> '1e-4', 3.0 -> '3', 0.123456 -> '0.1235', 2.5e-05 -> '2.5e-5'."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    a = abs(x)
    if a < 1e-3 or a >= 1e6:
        mantissa, exponent = f"{x:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    decimals = max(0, 3 - math.floor(math.log10(a)))  # 4 significant digits
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_value(value: Any) -> str:
    """A configuration value for a person: booleans Yes/No, lists comma-separated, missing values 'Not set'."""
    if value is None:
        return NOT_SET
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, str):
        return value.strip() or NOT_SET
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        return ", ".join(fmt_value(v) for v in items) if items else "None"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt_value(v)}" for k, v in value.items()) if value else "None"
    return str(value)


# ---- grouping ----------------------------------------------------------------------------------------------------
def flatten(config: dict[str, Any] | None) -> dict[str, Any]:
    """Top-level keys as they are; keys of nested known sections ('lora': {...}, 'training': {...}) lifted to the
    top (the top level wins); other nested objects kept whole."""
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict) and str(key).lower() in SECTION_KEYS:
            for inner, v in flatten(value).items():
                nested.setdefault(inner, v)
        else:
            flat[str(key)] = value
    return {**nested, **flat}


def is_dpo(training_config: dict[str, Any] | None) -> bool:
    """Preference-trained: a method of dpo, a 'dpo' / 'preference' section, or keys like beta, dpo_*,
    preference_*."""
    config = training_config or {}
    if any(str(k).lower() in ("dpo", "preference") for k in config):
        return True
    flat = flatten(config)
    if str(flat.get("method", flat.get("training_method", flat.get("objective", "")))).lower() in DPO_METHODS:
        return True
    return any(k.lower() in ("beta", "dpo_beta") or k.lower().startswith(("dpo_", "preference_")) for k in flat)


def _group_of(key: str) -> tuple[str, Param | None]:
    known = _BY_KEY.get(key.lower())
    if known:
        return known
    low = key.lower()
    if low.startswith("lora_"):
        return "LoRA", None
    if low.startswith(("dpo_", "preference_")):
        return "DPO", None
    if low.startswith(("save_", "checkpoint", "resume")):
        return "Checkpointing", None
    if low.startswith(("adam_", "lr_", "warmup")):
        return "Training", None
    return "Other", None


def _label(key: str) -> str:
    return key.replace("_", " ").replace(".", " · ").strip().capitalize()


def _is_default(value: Any, default: Any) -> bool:
    if value in (None, [], {}) and default in (None, [], {}):
        return True
    return type(value) is type(default) and value == default


def config_groups(training_config: dict[str, Any] | None, lora_config: dict[str, Any] | None = None,
                  known: dict[str, Any] | None = None) -> list[ConfigGroup]:
    """Rows grouped into Model, LoRA, Training, Hardware, Checkpointing, DPO (only when preference-trained) and
    Other. The LoRA group reads adapter_config.json's lora_config first (what the files hold), then the training
    configuration; `known` (e.g. the registry's base model) fills what the training configuration lacks.
    Standard parameters that are missing show 'Not set'."""
    flat = flatten(training_config)
    for key, value in (known or {}).items():  # after the configuration's own keys (and aliases): they win
        if value is not None:
            flat.setdefault(key, value)
    dpo = is_dpo(training_config)
    lora = {k: v for k, v in (lora_config or {}).items() if k in LORA_FILE_KEYS}
    found: dict[str, dict[str, tuple[str, Any]]] = {g: {} for g in GROUP_ORDER}  # group -> canonical -> (key, v)
    extras: dict[str, list[tuple[str, Any]]] = {g: [] for g in GROUP_ORDER}
    for key, value in lora.items():
        found["LoRA"][key] = (key, value)
    for key, value in flat.items():
        group, param = _group_of(key)
        if group == "DPO" and not dpo:
            group = "Other"
        if param is None:
            extras[group].append((key, value))
        elif param.key not in found[group]:
            found[group][param.key] = (key, value)
    groups = []
    for name in GROUP_ORDER:
        if name == "DPO" and not dpo:
            continue
        rows = []
        for param in PARAMS.get(name, []):
            hit = found[name].get(param.key)
            if hit is None and not param.always:
                continue
            if hit is not None and name == "LoRA" and param.key in LORA_FILE_DEFAULTS and \
                    _is_default(hit[1], LORA_FILE_DEFAULTS[param.key]):
                continue  # a PEFT default written to adapter_config.json: not worth a row
            key, value = hit if hit else (param.key, None)
            rows.append(ConfigRow(key, param.label, fmt_value(value), param.tip))
        for key, value in extras[name]:
            rows.append(ConfigRow(key, _label(key), fmt_value(value),
                                  "Recorded with the training run; the studio has no description for it."))
        if rows and (name != "Other" or extras[name]):
            groups.append(ConfigGroup(name, rows))
    return groups


# ---- HTML --------------------------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def group_html(group: ConfigGroup) -> str:
    rows = []
    for row in group.rows:
        missing = " cfg-missing" if row.value == NOT_SET else ""
        rows.append(f'<tr data-key="{_e(row.key)}"><th scope="row" title="{_e(row.tip)}"><span class="cfg-name">'
                    f'{_e(row.label)}</span> <code class="cfg-key">{_e(row.key)}</code></th>'
                    f'<td class="cfg-value{missing}">{_e(row.value)}</td></tr>')
    return (f'<section class="cfg-group" data-group="{_e(group.name)}"><h4>{_e(group.name)}</h4>'
            f'<table><tbody>{"".join(rows)}</tbody></table></section>')


def config_view_html(training_config: dict[str, Any] | None, lora_config: dict[str, Any] | None = None,
                     known: dict[str, Any] | None = None) -> str:
    """The configuration view of one adapter. Hover a parameter's name for what it does and typical values."""
    parts = ['<div class="adapter-config">']
    if not training_config:
        parts.append(f'<p class="cfg-note" role="note">{_e(NO_TRAINING_CONFIG)}</p>')
        lora_only = [g for g in config_groups(None, lora_config) if g.name == "LoRA"]
        parts.extend(group_html(g) for g in lora_only)
    else:
        parts.append('<p class="cfg-hint">Hover a parameter for what it does and its typical values.</p>')
        parts.extend(group_html(g) for g in config_groups(training_config, lora_config, known))
    parts.append("</div>")
    return "".join(parts)


def group_names(groups: Iterable[ConfigGroup]) -> list[str]:
    return [g.name for g in groups]
