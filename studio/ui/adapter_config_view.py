"""How an adapter's training configuration is shown: the studio's real configuration, grouped as the run form
groups it, with each field's title and description from TrainingConfig's JSON Schema.

Pure functions (dicts in, HTML out) so they are easy to test:

    fmt_value(v)                              one value for a person: 1e-4, 3, 0.1235, Yes/No, "a, b", Not set
    is_dpo(training_config)                   preference-trained (method "dpo")
    config_groups(training_config, lora)      [ConfigGroup(name, rows)] in the order Model, LoRA, Training, Hardware,
                                              Checkpointing, DPO (only for DPO), Other (keys the schema does not have)
    config_view_html(training_config, lora)   the whole view; a clear message when there is no training configuration

A studio-trained adapter records the whole TrainingConfig plus "method" (studio/services/training.py); its LoRA
values are read from adapter_config.json (what the files hold). An imported adapter may carry any training record:
its keys that the schema does not know go to a plain "Other" group, named as they are.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Iterable

from studio.training.config import GROUPS, TARGET_PRESETS, config_schema

NOT_SET = "Not set"
NO_TRAINING_CONFIG = ("No training configuration was recorded for this adapter: it was imported without the "
                      "studio's training record (training_provenance.json). Only its LoRA settings, read from "
                      "adapter_config.json, are known.")
GROUP_ORDER = (*GROUPS, "Other")
UNKNOWN_TIP = "Recorded with the adapter's training; the studio's training configuration has no such field."

# What a trained adapter's record holds besides TrainingConfig's fields (one name each, no aliases):
# key -> (group, label, tip). "base_model", "base_model_revision" and "dataset" come from the adapter's record.
RECORD_FIELDS: dict[str, tuple[str, str, str]] = {
    "base_model": ("Model", "Base model", "The model the adapter was trained on. An adapter only works on that "
                   "model (same layers, same shapes, same weights)."),
    "base_model_revision": ("Model", "Base model revision", "The exact version of the base model's weights used "
                            "for training."),
    "method": ("Training", "Method", "sft: supervised fine-tuning on clips with their captions; dpo: preference "
               "tuning on the votes of a blind A/B test."),
    "dataset": ("Training", "Dataset", "The dataset (name, version and content hash) the adapter was trained on."),
    "start_adapter_id": ("Training", "Continued from adapter", "The adapter version (id) the run started from "
                         "instead of a new adapter."),
    "checkpoint_step": ("Checkpointing", "Registered checkpoint (step)", "The step of the run's checkpoint this "
                        "version is: any checkpoint of a run can be registered, not only the last."),
    "abtest_id": ("DPO", "A/B test", "The blind A/B test (id) whose votes the run learned from."),
}
# adapter_config.json keys (PEFT's LoraConfig) that TrainingConfig has no field for: a row only when the file
# differs from PEFT's default. key -> (label, tip, PEFT's default)
LORA_FILE_FIELDS: dict[str, tuple[str, str, Any]] = {
    "bias": ("Bias", "Which biases are trained along with the adapter: none (usual), lora_only or all.", "none"),
    "use_rslora": ("Rank-stabilised scaling", "rsLoRA: scales by alpha / √r instead of alpha / r.", False),
    "use_dora": ("DoRA", "Weight-decomposed LoRA: trains the magnitude and direction of the weights separately.",
                 False),
    "init_lora_weights": ("Initialisation", "How the LoRA matrices start (True: B = 0, a no-op at first).", True),
    "modules_to_save": ("Fully trained modules", "Modules trained and saved in full besides the LoRA matrices.",
                        None),
    "layers_to_transform": ("Layers", "Only these layer numbers get LoRA matrices (default: all).", None),
    "rank_pattern": ("Rank per layer", "Ranks that differ from r for some layers.", {}),
    "alpha_pattern": ("Alpha per layer", "Alphas that differ from lora_alpha for some layers.", {}),
}


@dataclass(frozen=True)
class ConfigRow:
    key: str  # the field's name in the configuration (or adapter_config.json)
    label: str
    value: str  # formatted for a person
    tip: str


@dataclass(frozen=True)
class ConfigGroup:
    name: str
    rows: list[ConfigRow]


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
def schema_fields() -> dict[str, dict]:
    """TrainingConfig's properties (title, description, x-group), in declaration order."""
    return config_schema()["properties"]


def is_dpo(training_config: dict[str, Any] | None) -> bool:
    """Trained by preference (the studio records method "dpo")."""
    return str((training_config or {}).get("method", "")).lower() == "dpo"


def target_value(preset: Any, file_value: Any) -> Any:
    """Target modules: the preset's name when the file holds its pattern (or no pattern is known), else what the
    file holds (an imported adapter's list of names, or a pattern that is no preset)."""
    if file_value is None:
        return preset
    if isinstance(preset, str) and TARGET_PRESETS.get(preset) == file_value:
        return preset
    return file_value


def _is_default(value: Any, default: Any) -> bool:
    if value in (None, [], {}) and default in (None, [], {}):
        return True
    return type(value) is type(default) and value == default


def config_groups(training_config: dict[str, Any] | None, lora_config: dict[str, Any] | None = None,
                  known: dict[str, Any] | None = None) -> list[ConfigGroup]:
    """Rows grouped into Model, LoRA, Training, Hardware, Checkpointing, DPO (only when preference-trained) and
    Other, labelled and explained by TrainingConfig's schema. LoRA values come from adapter_config.json first (what
    the files hold), then the training configuration. `known` (base_model, base_model_revision, dataset: the
    adapter's record) fills what the configuration lacks. A configuration from the studio shows every field of
    its groups (a field it predates: 'Not set'); keys the schema does not have go to Other."""
    config = dict(training_config or {})
    lora_file = dict(lora_config or {})
    props = schema_fields()
    studio_made = any(k in props for k in config)
    dpo = is_dpo(config)
    rows: dict[str, list[ConfigRow]] = {g: [] for g in GROUP_ORDER}

    def add(group: str, key: str, label: str, value: Any, tip: str) -> None:
        rows[group].append(ConfigRow(key, label, fmt_value(value), tip))

    # the adapter's record (known: the registry's name of the base model, ...) wins over the configuration's copy
    facts = {**{k: config[k] for k in RECORD_FIELDS if config.get(k) is not None},
             **{k: v for k, v in (known or {}).items() if v is not None}}
    for key, (group, label, tip) in RECORD_FIELDS.items():
        if key in facts and (training_config or group == "Model") and (group != "DPO" or dpo):
            add(group, key, label, facts[key], tip)
    for key, prop in props.items():
        group = prop.get("x-group", "Other")
        if group == "DPO" and not dpo:
            continue
        label, tip = prop.get("title", key), prop.get("description", "")
        if group == "LoRA":
            if key == "target_modules":
                value = target_value(config.get(key), lora_file.get(key))
            else:
                value = lora_file.get(key, config.get(key))
            if value is None and not studio_made:
                continue
            add(group, key, label, value, tip)
        elif studio_made:
            add(group, key, label, config.get(key), tip)
    for key, (label, tip, default) in LORA_FILE_FIELDS.items():
        if key in lora_file and not _is_default(lora_file[key], default):
            add("LoRA", key, label, lora_file[key], tip)
    for key, value in config.items():
        if key not in props and key not in RECORD_FIELDS:
            add("Other", str(key), str(key), value, UNKNOWN_TIP)
    return [ConfigGroup(name, rows[name]) for name in GROUP_ORDER if rows[name]]


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
