"""The adapter's configuration view: the studio's TrainingConfig shown in its schema's groups, with the schema's
titles and descriptions, LoRA values read from adapter_config.json, DPO only for DPO, and an "Other" group for
keys of imported adapters that the schema does not have."""
from __future__ import annotations

import re

import pytest

from studio.training.config import TARGET_PRESETS, TrainingConfig
from studio.ui import adapter_config_view as view


@pytest.mark.parametrize("value, text", [
    (1e-4, "1e-4"), (2.5e-5, "2.5e-5"), (1e-8, "1e-8"), (3.0, "3"), (0.123456, "0.1235"),
    (0.001, "0.001"), (0.3, "0.3"), (0.05, "0.05"), (12345.678, "12346"), (-0.5, "-0.5"), (0.0, "0"), (16, "16"),
    (True, "Yes"), (False, "No"), (None, "Not set"), ("", "Not set"), ("adamw", "adamw"),
    (["q_proj", "v_proj"], "q_proj, v_proj"), ([], "None"), ({"a": 1, "b": 0.5}, "a: 1, b: 0.5"),
])
def test_value_formatting(value, text):
    assert view.fmt_value(value) == text


def test_small_numbers_however_written():
    assert view.fmt_value(0.0001) == view.fmt_value(1e-4) == view.fmt_value(10e-5) == "1e-4"
    assert view.fmt_value(0.0003) == "3e-4"


# What the studio records for a trained adapter: the whole TrainingConfig plus the method; and its files' LoRA
SFT = {**TrainingConfig(r=8, lora_alpha=16, learning_rate=3e-4, max_steps=200).model_dump(), "method": "sft",
       "base_model": "studio-tiny", "start_adapter_id": None, "checkpoint_step": 100}
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": TARGET_PRESETS["attention"],
        "bias": "none", "use_dora": False, "use_rslora": False, "peft_type": "LORA", "init_lora_weights": True}
KNOWN = {"base_model": "Studio Tiny (studio-tiny)", "base_model_revision": "abc123",
         "dataset": "tones v3 (sha256 1f2e…)"}


def rows_of(groups) -> dict[str, dict[str, str]]:
    return {g.name: {r.key: r.value for r in g.rows} for g in groups}


def test_a_studio_run_shows_every_field_in_its_schema_group():
    groups = view.config_groups(SFT, LORA, KNOWN)
    assert view.group_names(groups) == ["Model", "LoRA", "Training", "Hardware", "Checkpointing"]
    rows = rows_of(groups)
    assert rows["Model"] == {"base_model": "Studio Tiny (studio-tiny)", "base_model_revision": "abc123",
                             "clip_duration_s": "10"}
    assert rows["LoRA"] == {"r": "8", "lora_alpha": "16", "lora_dropout": "0.05", "target_modules": "attention"}
    assert rows["Training"]["method"] == "sft"
    assert rows["Training"]["dataset"] == "tones v3 (sha256 1f2e…)"
    assert rows["Training"]["learning_rate"] == "3e-4" and rows["Training"]["max_steps"] == "200"
    assert rows["Hardware"] == {"device": "auto", "precision": "auto", "threads": "0"}
    assert set(rows["Checkpointing"]) == {"checkpoint_step", "checkpoint_every", "keep_last", "audition_prompts",
                                          "audition_duration_s"}
    assert rows["Checkpointing"]["checkpoint_step"] == "100"
    assert "start_adapter_id" not in rows["Training"]  # a new adapter: nothing to say
    # every TrainingConfig field but the DPO ones is a row, under the group its schema names
    shown = {k for g in groups for k in (r.key for r in g.rows)}
    assert shown >= set(TrainingConfig.model_fields) - {"dpo_beta", "dpo_reference"}
    labels = {r.key: r.label for g in groups for r in g.rows}
    assert labels["learning_rate"] == "Learning rate" and labels["r"] == "Rank (r)"


def test_dpo_group_only_for_a_dpo_run():
    dpo = {**SFT, "method": "dpo", "dpo_beta": 0.2, "dpo_reference": "base", "abtest_id": 4, "start_adapter_id": 9}
    assert view.is_dpo(dpo) and not view.is_dpo(SFT) and not view.is_dpo(None)
    rows = rows_of(view.config_groups(dpo, LORA))
    assert rows["DPO"] == {"abtest_id": "4", "dpo_beta": "0.2", "dpo_reference": "base"}
    assert rows["Training"]["start_adapter_id"] == "9"
    assert "DPO" not in rows_of(view.config_groups(SFT, LORA))


def test_lora_values_are_what_the_files_hold():
    # the file wins over the configuration (what the adapter really is); a pattern that is no preset is shown as is
    rows = rows_of(view.config_groups({**SFT, "r": 4}, {**LORA, "target_modules": "my.*pattern", "use_dora": True}))
    assert rows["LoRA"]["r"] == "8"
    assert rows["LoRA"]["target_modules"] == "my.*pattern"
    assert rows["LoRA"]["use_dora"] == "Yes"  # not PEFT's default: a row; bias "none" is the default: none


def test_an_imported_adapters_record_goes_to_other_as_written():
    rows = rows_of(view.config_groups({"lr": 3e-4, "num_train_epochs": 3, "optimizer": {"name": "adamw"}},
                                      {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}))
    assert rows["Other"] == {"lr": "3e-4", "num_train_epochs": "3", "optimizer": "name: adamw"}
    assert rows["LoRA"] == {"r": "16", "lora_alpha": "32", "target_modules": "q_proj, v_proj"}
    assert "Training" not in rows and "Hardware" not in rows  # nothing guessed from other names


def test_a_field_an_older_record_lacks_is_not_set():
    old = {k: v for k, v in SFT.items() if k != "cfg_dropout"}
    assert rows_of(view.config_groups(old, LORA))["Training"]["cfg_dropout"] == "Not set"


def test_html_explains_every_row_and_escapes_values():
    html = view.config_view_html({**SFT, "note": "<script>alert(1)</script>"}, LORA, KNOWN)
    tip = TrainingConfig.model_fields["learning_rate"].description
    assert f'title="{tip}"' in html
    assert re.search(r'<tr data-key="learning_rate"><th scope="row" title="[^"]+"><span class="cfg-name">'
                     r'Learning rate</span>.*?<td class="cfg-value">3e-4</td>', html)
    rows = html.count("<tr ")
    assert rows == html.count(' title="') and rows > 20
    assert "<script>" not in html and "&lt;script&gt;" in html
    for group in ("Model", "LoRA", "Training", "Hardware", "Checkpointing", "Other"):
        assert f'data-group="{group}"' in html
    assert 'data-group="DPO"' not in html


def test_no_training_configuration_says_so_and_still_shows_the_lora_settings():
    for empty in (None, {}):
        html = view.config_view_html(empty, LORA)
        assert view.NO_TRAINING_CONFIG.replace("'", "&#x27;") in html
        assert 'data-group="LoRA"' in html and 'data-group="Training"' not in html
        assert ">8<" in html
