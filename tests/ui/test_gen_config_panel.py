"""Generation-settings forms built from the settings JSON Schema (studio/ui/settings_form.py), the Settings tab's
panel and the Generate tab's sampling widgets as built by build_ui, and the panel's gradio_client endpoints.

No browser: tests/ui/test_browser_gen_config.py drives the same panel in Chromium."""
from __future__ import annotations

import math

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio.config import PROJECT_ROOT
from studio.errors import InvalidValues
from studio.registry import load_registry
from studio.ui.app import build_ui
from studio.ui.gen_config_panel import form_updates, history_rows
from studio.ui.generate_tab import RANDOM_SEED, SAMPLING_FIELDS
from studio.ui.settings_form import (KEEP, UNSAVED_MARK, FieldSpec, bounds_text, coerce, field_spec,
                                     field_specs, info_for, label_for, make_widget, widget_update)
from tests.conftest import registry_dict
from tests.live import serve

STEREO = {"stereo": {"display_name": "Tiny Stereo", "channels": 2}}
STEREO_ONLY = "downmix_to_mono"
REAL_REGISTRY = PROJECT_ROOT / "registry.yaml"
WIDGET_CLASS = {"number": gr.Number, "dropdown": gr.Dropdown, "checkbox": gr.Checkbox}
# How a person sees each MusicGen setting (written out, not derived from the code under test).
EXPECTED_KIND = {"do_sample": "checkbox", "top_k": "number", "top_p": "number", "temperature": "number",
                 "guidance_scale": "number", "seed_policy": "dropdown", "seed": "number",
                 "default_duration_s": "number", "output_format": "dropdown", "normalize_loudness": "checkbox",
                 "target_lufs": "number", "downmix_to_mono": "checkbox"}


def stereo_registry():
    return registry_dict(**STEREO)


def all_models(make_ctx):
    """(ctx, model id) for every model of the test registry (with a stereo entry) and of the real registry.yaml."""
    test_ctx = make_ctx(stereo_registry())
    real_ctx = make_ctx(load_registry(REAL_REGISTRY))
    return [(test_ctx, m.id) for m in test_ctx.registry.models] + [(real_ctx, m.id) for m in real_ctx.registry.models]


def by_elem_id(demo: gr.Blocks) -> dict[str, gr.components.Component]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def expected_step(prop: dict) -> float:
    return 1 if prop["type"] == "integer" else prop["x-step"]


def expected_bounds(prop: dict) -> tuple[float | None, float | None]:
    """The schema's bounds as a form shows them: an exclusive minimum becomes the first allowed step above it."""
    low = prop.get("minimum")
    if low is None and "exclusiveMinimum" in prop:
        low = prop["exclusiveMinimum"] + expected_step(prop)
    return low, prop.get("maximum")


# ---- the form matches the schema, for every model --------------------------------------------------------------------
def test_every_model_has_a_schema_with_its_family_s_settings(make_ctx):
    seen_stereo = 0
    for ctx, model_id in all_models(make_ctx):
        schema = ctx.gen_config.schema(model_id)
        props = schema["properties"]
        stereo = ctx.registry.get(model_id).channels == 2
        assert (STEREO_ONLY in props) is stereo, model_id
        seen_stereo += stereo
        assert set(props) == set(EXPECTED_KIND) - ({STEREO_ONLY} if not stereo else set()), model_id
        for name, prop in props.items():
            assert prop.get("title") and prop.get("description"), f"{model_id}.{name} has no title or description"
            assert "default" in prop, f"{model_id}.{name}"
    assert seen_stereo >= 2  # the test registry's stereo entry and registry.yaml's stereo models (official and tiny)


def test_field_specs_match_the_schema_for_every_model(make_ctx):
    for ctx, model_id in all_models(make_ctx):
        spec = ctx.registry.get(model_id)
        schema = ctx.gen_config.schema(model_id)
        specs = field_specs(schema)
        assert [f.name for f in specs] == list(schema["properties"]), model_id  # declaration order
        for f in specs:
            prop, where = schema["properties"][f.name], f"{model_id}.{f.name}"
            assert f.kind == EXPECTED_KIND[f.name], where
            assert f.label == prop["title"] and f.description == prop["description"], where
            # the default is the registry's (the schema's), typed as the setting
            assert f.default == prop["default"] == getattr(spec.generation, f.name), where
            if f.kind == "dropdown":
                assert f.choices == tuple(prop["enum"]), where
                assert f.default in f.choices, where
            elif f.kind == "checkbox":
                assert isinstance(f.default, bool) and prop["type"] == "boolean", where
            else:
                assert f.integer is (prop["type"] == "integer"), where
                assert f.step == expected_step(prop), where
                assert (f.minimum, f.maximum) == expected_bounds(prop), where
                assert f.minimum <= f.default <= f.maximum, where
                assert f.kind == "number", where  # never a slider: Gradio's clamps typed values silently
        by_name = {f.name: f for f in specs}
        # spot checks written out: the bounds a person reads in the form
        assert (by_name["top_k"].minimum, by_name["top_k"].maximum, by_name["top_k"].step) == (0, 2048, 1)
        assert (by_name["temperature"].minimum, by_name["temperature"].maximum) == (0.05, 5.0)  # exclusive 0
        assert by_name["default_duration_s"].maximum == spec.max_duration_s
        assert by_name["default_duration_s"].default == min(10.0, spec.max_duration_s)
        assert (by_name["seed"].minimum, by_name["seed"].maximum) == (0, 2**32 - 1)
        assert by_name["output_format"].choices == ("wav", "flac", "mp3")


def test_widgets_made_from_the_specs_carry_kind_bounds_options_label_and_help(make_ctx):
    for ctx, model_id in all_models(make_ctx):
        for f in field_specs(ctx.gen_config.schema(model_id)):
            w = make_widget(f, f.default, f"x-{f.name}")
            where = f"{model_id}.{f.name}"
            assert type(w) is WIDGET_CLASS[f.kind], where
            assert w.label == f.label and w.elem_id == f"x-{f.name}", where
            assert w.info.startswith(f.description) and "default " in w.info, where
            assert w.value == f.default, where
            if f.kind == "dropdown":
                assert [v for _, v in w.choices] == list(f.choices), where
            if f.kind == "number":  # what was typed reaches the studio's validation: no Gradio bounds or rounding
                assert w.minimum is None and w.maximum is None and w.precision is None, where
                assert w.step == f.step and bounds_text(f) in w.info, where  # arrows step; the range is said


# ---- the built page: Settings tab panel and Generate tab widgets --------------------------------------------------
@pytest.mark.parametrize("registry", ["test", "real"])
def test_settings_panel_has_one_widget_per_setting_with_the_schema_s_bounds(make_ctx, registry):
    ctx = make_ctx(stereo_registry() if registry == "test" else load_registry(REAL_REGISTRY))
    model_id = ctx.registry.default_model  # no model is loaded: the panel shows the default model's settings
    assert ctx.registry.get(model_id).channels == 1
    schema = ctx.gen_config.schema(model_id)
    comps = by_elem_id(build_ui(ctx))
    assert comps["config-model"].value == model_id
    assert sorted(v for _, v in comps["config-model"].choices) == sorted(ctx.registry.ids())
    for name, prop in schema["properties"].items():
        w = comps.get(f"cfg-{name}")
        assert w is not None, f"no widget #cfg-{name}"
        assert type(w) is WIDGET_CLASS[EXPECTED_KIND[name]], name
        assert w.visible is True, name
        assert w.label == prop["title"], name  # saved values are the defaults: no mark, no hint
        assert prop["description"] in w.info and "default " in w.info, name
        assert w.value == prop["default"], name
        if isinstance(w, gr.Number) and prop.get("type") == "number":  # the range in words, arrows by a step
            low, high = expected_bounds(prop)
            assert w.step == expected_step(prop) and f"{low:g} to {high:g}" in w.info, name
        elif isinstance(w, gr.Dropdown):
            assert [v for _, v in w.choices] == prop["enum"], name
            assert "one of " + ", ".join(prop["enum"]) in w.info, name
        elif isinstance(w, gr.Number):
            assert f"{prop['minimum']} to {prop['maximum']}" in w.info, name  # the range is told in the help
    # the stereo-only setting exists (the registry has a stereo model) but is hidden for this mono model
    assert comps[f"cfg-{STEREO_ONLY}"].visible is False
    for eid in ("config-summary", "config-save", "config-reset", "config-reset-confirm", "config-reset-yes",
                "config-reset-no", "config-history-box", "config-history"):
        assert eid in comps, eid
    assert comps["config-save"].interactive is False  # nothing to save yet
    assert comps["config-reset-confirm"].visible is False
    assert "Every setting has its default value" in comps["config-summary"].value


def test_stereo_model_shows_its_own_setting(make_ctx):
    reg = stereo_registry()
    reg["default_model"] = "stereo"
    ctx = make_ctx(reg)
    assert STEREO_ONLY in ctx.gen_config.schema("stereo")["properties"]
    comps = by_elem_id(build_ui(ctx))
    assert comps["config-model"].value == "stereo"
    w = comps[f"cfg-{STEREO_ONLY}"]
    assert isinstance(w, gr.Checkbox) and w.visible is True and w.label == "Mix down to mono"


def test_choosing_another_model_shows_or_hides_its_settings_and_bounds(make_ctx):
    ctx = make_ctx(stereo_registry())
    names = list(ctx.gen_config.schema("stereo")["properties"])  # the union: stereo has every setting
    i = names.index

    stereo = form_updates(ctx, names, "stereo")
    assert stereo[i(STEREO_ONLY)]["visible"] is True and stereo[i(STEREO_ONLY)]["value"] is False
    mono = form_updates(ctx, names, "studio-tiny")
    assert mono[i(STEREO_ONLY)] == gr.update(visible=False)
    # tiny-hub allows 8 s: the duration's range in words narrows and its default follows (no Gradio bounds)
    hub = form_updates(ctx, names, "tiny-hub")
    dur = hub[i("default_duration_s")]
    assert dur["value"] == 8 and "minimum" not in dur and "maximum" not in dur
    assert "0.5 to 8" in dur["info"]
    assert "0.5 to 30)" in mono[i("default_duration_s")]["info"]
    summary, save = mono[-2], mono[-1]
    assert "All changes saved" in summary and save.interactive is False


def test_panel_and_generate_tab_start_from_the_stored_settings(ctx):
    stored = dict(top_k=100, temperature=0.75, guidance_scale=4.5, do_sample=False, seed_policy="fixed", seed=77,
                  default_duration_s=4.5, output_format="flac")
    ctx.gen_config.update("studio-tiny", stored)
    defaults = {"top_k": "250", "temperature": "1", "guidance_scale": "3", "do_sample": "on", "seed_policy": "random",
                "seed": "0", "default_duration_s": "10", "output_format": "wav"}
    comps = by_elem_id(build_ui(ctx))
    for name, value in stored.items():
        w = comps[f"cfg-{name}"]
        assert w.value == value, name
        # saved (not "unsaved"), and different from the default, which the label names
        assert UNSAVED_MARK not in w.label and w.label.endswith(f" · default: {defaults[name]}"), (name, w.label)
    assert comps["cfg-top_p"].label == "Top-p"  # the default value: no hint
    assert "Top-k" in comps["config-summary"].value and "Last saved" in comps["config-summary"].value
    # Generate tab: the sampling widgets come from the same schema and start at the stored values
    for name in SAMPLING_FIELDS:
        w = comps[f"gen-{name}"]
        assert type(w) is WIDGET_CLASS[EXPECTED_KIND[name]], name
        assert w.value == ctx.gen_config.get("studio-tiny").values[name], name
        if isinstance(w, gr.Number):
            assert w.minimum is None and w.maximum is None, name
    assert comps["gen-top_k"].value == 100 and comps["gen-do_sample"].value is False
    assert comps["duration"].value == 4.5
    assert comps["seed"].value == 77  # seed policy fixed: the stored seed


def test_generate_tab_seed_is_random_unless_the_policy_is_fixed(ctx):
    ctx.gen_config.update("studio-tiny", {"seed": 77})  # a seed, but the policy stays random
    comps = by_elem_id(build_ui(ctx))
    assert comps["seed"].value == RANDOM_SEED == -1
    assert comps["duration"].value == 10.0


def _panel_fn(demo: gr.Blocks, name: str):
    """The first event handler named `name` (the panel wires one per widget, all the same function)."""
    fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", None) == name]
    assert fns, f"no handler {name!r}"
    return fns[0]


def test_inline_validation_handler_reads_slider_noise_and_names_bad_fields(make_ctx):
    """The handler behind every edit (a widget's input event), called as Gradio calls it: a dict by component."""
    ctx = make_ctx(stereo_registry())
    demo = build_ui(ctx)
    comps = by_elem_id(demo)
    check = _panel_fn(demo, "check")
    names = [c.elem_id.removeprefix("cfg-") for c in check.outputs if (c.elem_id or "").startswith("cfg-")]

    def run(**edits):
        data = {comps["config-model"]: "studio-tiny"}
        for name in names:
            w = comps[f"cfg-{name}"]
            data[w] = edits.get(name, w.value)
        out = check.fn(data)
        return dict(zip(names, out)), out[-2], out[-1]

    fields, summary, save = run(top_k=100.0, top_p=0.30000000000000004)  # what a slider sends
    assert fields["top_k"]["label"] == "Top-k ● unsaved · default: 250"
    assert fields["top_p"]["label"] == "Top-p ● unsaved · default: 0"
    assert fields["temperature"]["label"] == "Temperature"
    assert "⚠️" not in fields["top_k"]["info"]
    assert "Unsaved changes: Top-k, Top-p" in summary.replace("**", "")
    assert save.interactive is True

    fields, summary, save = run(top_k=100.0, seed=-5)
    assert fields["seed"]["info"].startswith("⚠️ must be at least 0 · ")
    assert "⚠️" not in fields["top_k"]["info"]
    assert "Not valid" in summary and "Fixed seed: must be at least 0" in summary
    assert save.interactive is False

    fields, _, save = run(seed=2**32)
    assert fields["seed"]["info"].startswith(f"⚠️ must be at most {2**32 - 1} · ") and save.interactive is False

    # a slider's number box sends what was typed, out of range too: named at the field, like any bad value
    fields, summary, save = run(temperature=0, top_k=3000)
    assert fields["temperature"]["info"].startswith("⚠️ must be more than 0 · ")
    assert fields["top_k"]["info"].startswith("⚠️ must be at most 2048 · ")
    assert "Temperature: must be more than 0" in summary and save.interactive is False

    fields, summary, save = run()  # back to the saved values: nothing to save
    assert save.interactive is False and "All changes saved" in summary
    assert ctx.gen_config.get("studio-tiny").values["top_k"] == 250  # checking never stores


def test_every_edit_is_checked_with_what_the_person_typed(make_ctx):
    """Each setting's input event runs the check: the last keystroke too (not dropped while a check runs), and
    before Gradio's own bounds check (which failed a slider's out-of-range value with no message)."""
    ctx = make_ctx(stereo_registry())
    demo = build_ui(ctx)
    comps = by_elem_id(demo)
    events = {}
    for f in demo.fns.values():
        if getattr(f.fn, "__name__", None) == "check":
            for block_id, event in f.targets:
                events[(demo.blocks[block_id].elem_id, event)] = f
    for name in ctx.gen_config.schema("stereo")["properties"]:
        f = events.get((f"cfg-{name}", "input"))
        assert f is not None, f"no inline check on #cfg-{name}"
        assert f.trigger_mode == "always_last" and f.preprocess is False, name
        assert comps["config-model"] in f.inputs and comps["config-save"] in f.outputs, name


# ---- pure helpers: tables --------------------------------------------------------------------------------------------
TOP_K = FieldSpec("top_k", "number", "Top-k", "Sample from the k best.", 250, integer=True, minimum=0,
                  maximum=2048, step=1)
TOP_P = FieldSpec("top_p", "number", "Top-p", "Nucleus.", 0.0, minimum=0.0, maximum=1.0, step=0.01)
TEMP = FieldSpec("temperature", "number", "Temperature", "Sharpens.", 1.0, minimum=0.05, maximum=5.0, step=0.05)
LUFS = FieldSpec("target_lufs", "number", "Target loudness (LUFS)", "Loudness.", -14.0, minimum=-40.0, maximum=-6.0,
                 step=0.5)
SEED = FieldSpec("seed", "number", "Fixed seed", "The seed.", 0, integer=True, minimum=0, maximum=2**32 - 1, step=1)
FREE = FieldSpec("gain", "number", "Gain", "Free.", 0.5, step=None)
FORMAT = FieldSpec("output_format", "dropdown", "Output format", "File format.", "wav",
                   choices=("wav", "flac", "mp3"))
SAMPLE = FieldSpec("do_sample", "checkbox", "Sampling", "Draw at random.", True)


@pytest.mark.parametrize("f, raw, expected", [
    (TOP_P, 0.30000000000000004, 0.3),  # binary noise from the slider
    (TOP_P, 0.07 * 3, 0.21),
    (TEMP, 0.15000000000000002, 0.15),
    (TEMP, 0.123456, 0.1235),  # step 0.05: two digits more than the step's
    (LUFS, -14.000000000001, -14.0),
    (LUFS, "-23", -23.0),
    (FREE, 0.1234567891, 0.123457),  # no step: six digits
    (TOP_K, 100.0, 100),  # sliders send floats; an integer setting gets an int
    (TOP_K, "42", 42),
    (TOP_K, 12.5, 12.5),  # not whole: left for the validation to refuse
    (SEED, 4294967295.0, 4294967295),
    (SEED, -5.0, -5),  # out of range is the validation's business, not coerce's
    (TOP_K, "abc", "abc"),  # unreadable: passed through unchanged
    (TOP_P, "", ""),
    (TOP_K, [1], [1]),
    (TOP_K, None, None),
    (FORMAT, "flac", "flac"),  # options and booleans as they are
    (FORMAT, "ogg", "ogg"),
    (SAMPLE, False, False),
])
def test_coerce(f, raw, expected):
    out = coerce(f, raw)
    assert out == expected
    assert type(out) is type(expected)


def test_coerced_values_pass_the_validation_a_save_runs(ctx):
    specs = {f.name: f for f in field_specs(ctx.gen_config.schema("studio-tiny"))}
    raw = {"top_k": 100.0, "top_p": 0.30000000000000004, "temperature": 0.7000000000000001, "seed": 12.0,
           "target_lufs": -23.000000000000004}
    values = {k: coerce(specs[k], v) for k, v in raw.items()}
    saved = ctx.gen_config.update("studio-tiny", values).values
    assert (saved["top_k"], saved["top_p"], saved["temperature"], saved["seed"], saved["target_lufs"]) == (
        100, 0.3, 0.7, 12, -23.0)
    # without coerce the strict schema refuses a slider's float for an integer setting
    with pytest.raises(InvalidValues, match="top_k: must be a whole number"):
        ctx.gen_config.update("studio-tiny", {"top_k": 100.0})


@pytest.mark.parametrize("f, unsaved, non_default, expected", [
    (TOP_K, False, False, "Top-k"),  # saved, the default
    (TOP_K, True, False, "Top-k ● unsaved"),  # an edit back to the default, not saved yet
    (TOP_K, False, True, "Top-k · default: 250"),  # saved, not the default
    (TOP_K, True, True, "Top-k ● unsaved · default: 250"),
    (FORMAT, False, True, "Output format · default: wav"),
    (SAMPLE, False, True, "Sampling · default: on"),
    (TEMP, True, True, "Temperature ● unsaved · default: 1"),
])
def test_label_tells_unsaved_edits_from_values_that_differ_from_the_default(f, unsaved, non_default, expected):
    assert label_for(f, unsaved, non_default) == expected


@pytest.mark.parametrize("f, error, expected", [
    (TOP_K, None, "Sample from the k best. (default 250; 0 to 2048)"),
    (TOP_P, None, "Nucleus. (default 0; 0 to 1)"),
    (TEMP, None, "Sharpens. (default 1; 0.05 to 5)"),
    (LUFS, None, "Loudness. (default -14; -40 to -6)"),
    (SEED, None, "The seed. (default 0; 0 to 4294967295)"),
    (FREE, None, "Free. (default 0.5)"),  # no bounds: none told
    (FORMAT, None, "File format. (default wav; one of wav, flac, mp3)"),
    (SAMPLE, None, "Draw at random. (default on)"),
    (FieldSpec("n", "checkbox", "N", "Off.", False), None, "Off. (default off)"),
    (TOP_K, "must be at most 2048", "⚠️ must be at most 2048 · Sample from the k best. (default 250; 0 to 2048)"),
    (SEED, "must be at least 0", "⚠️ must be at least 0 · The seed. (default 0; 0 to 4294967295)"),
])
def test_info_for(f, error, expected):
    assert info_for(f, error) == expected


@pytest.mark.parametrize("name, prop, expected", [
    ("n", {"type": "integer", "minimum": 0, "maximum": 10, "default": 3},
     dict(kind="number", integer=True, minimum=0, maximum=10, step=1)),
    ("n", {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 3},
     dict(kind="number", integer=True, minimum=0, maximum=2**32 - 1)),
    ("n", {"type": "integer", "minimum": 0, "default": 3},
     dict(kind="number", minimum=0, maximum=None)),  # open-ended
    ("x", {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0, "x-step": 0.1, "default": 0.5},
     dict(kind="number", minimum=0.1, maximum=0.9, step=0.1)),
    ("x", {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 0.5},
     dict(kind="number", step=0.01)),  # no x-step: a hundredth of the range
    ("x", {"type": "number", "minimum": 0.0, "maximum": 20.0, "default": 3.0}, dict(kind="number", step=0.1)),
    ("x", {"type": "number", "default": 0.5}, dict(kind="number", minimum=None, maximum=None)),
    ("c", {"enum": ["a", "b"], "type": "string", "default": "a", "title": "Choice"},
     dict(kind="dropdown", choices=("a", "b"), label="Choice")),
    ("c", {"const": "only", "default": "only"}, dict(kind="dropdown", choices=("only",), label="c")),
    ("b", {"type": "boolean", "default": True, "description": "On or off."},
     dict(kind="checkbox", default=True, description="On or off.")),
])
def test_field_spec_table(name, prop, expected):
    f = field_spec(name, prop)
    for attr, value in expected.items():
        got = getattr(f, attr)
        assert (math.isclose(got, value) if isinstance(value, float) and got is not None else got == value), attr


def test_field_spec_refuses_a_type_it_cannot_show():
    with pytest.raises(ValueError, match="'tags'.*'array'"):
        field_spec("tags", {"type": "array", "items": {"type": "string"}})


def test_widget_update_hides_unknown_fields_and_keeps_values_unless_given():
    assert widget_update(None) == gr.update(visible=False)
    up = widget_update(TOP_K, error="must be at most 2048", unsaved=True)
    assert "value" not in up  # KEEP: the person's input stays
    assert up["label"] == "Top-k ● unsaved" and up["info"].startswith("⚠️ must be at most 2048")
    assert up["visible"] is True and "minimum" not in up and "maximum" not in up  # no Gradio bounds
    assert "0 to 2048" in up["info"]
    assert widget_update(TOP_K, value=KEEP) == widget_update(TOP_K)
    assert widget_update(FORMAT, value="flac")["choices"] == ["wav", "flac", "mp3"]
    assert widget_update(SEED, value=0)["value"] == 0
    assert "minimum" not in widget_update(SEED)  # a number input gets no browser-side bounds


def test_history_rows_describe_each_change(ctx):
    ctx.gen_config.update("studio-tiny", {"top_k": 100, "output_format": "flac"})
    ctx.gen_config.reset("studio-tiny")
    rows = history_rows(ctx.gen_config.history("studio-tiny").changes)
    assert [r[2] for r in rows] == ["reset", "saved", "first start"]  # newest first, in the page's words
    assert rows[1][1] == "local" and rows[1][3] == "top_k: 250 → 100; output_format: wav → flac"
    assert rows[0][3] == "top_k: 100 → 250; output_format: flac → wav"
    assert rows[2][3] == "started from the studio's defaults"


# ---- gradio_client ---------------------------------------------------------------------------------------------------
@pytest.fixture
def gclient(ctx):
    with serve(ctx) as base:
        c = Client(base, verbose=False)
        yield c
        c.close()


def test_generation_settings_endpoints(gclient, ctx):
    got = gclient.predict("studio-tiny", api_name="/generation_settings")
    assert got["model_id"] == "studio-tiny" and got["changed"] == []
    assert got["values"] == got["defaults"] == ctx.gen_config.get("studio-tiny").defaults
    assert got["updated_by"] == "system"

    saved = gclient.predict("studio-tiny", {"top_k": 100, "output_format": "flac"},
                            api_name="/save_generation_settings")
    assert saved["values"]["top_k"] == 100 and saved["values"]["output_format"] == "flac"
    assert sorted(saved["changed"]) == ["output_format", "top_k"] and saved["updated_by"] == "local"
    assert saved["values"]["temperature"] == 1.0  # the others keep their values
    assert ctx.gen_config.get("studio-tiny").values == saved["values"]  # stored
    assert gclient.predict("studio-tiny", api_name="/generation_settings")["values"] == saved["values"]

    # invalid: the error names each bad field; nothing is stored
    with pytest.raises(AppError) as info:
        gclient.predict("studio-tiny", {"top_k": 5000, "seed": -1, "temperature": 0.5},
                        api_name="/save_generation_settings")
    text = str(info.value)
    assert "top_k: must be at most 2048" in text and "seed: must be at least 0" in text, text
    assert "Traceback" not in text
    with pytest.raises(AppError, match="output_format: must be one of 'wav', 'flac' or 'mp3'"):
        gclient.predict("studio-tiny", {"output_format": "ogg"}, api_name="/save_generation_settings")
    with pytest.raises(AppError, match="colour: unknown setting"):
        gclient.predict("studio-tiny", {"colour": "blue"}, api_name="/save_generation_settings")
    assert ctx.gen_config.get("studio-tiny").values == saved["values"]
    with pytest.raises(AppError, match="Unknown model 'nope'"):
        gclient.predict("nope", api_name="/generation_settings")

    reset = gclient.predict("studio-tiny", api_name="/reset_generation_settings")
    assert reset["values"] == reset["defaults"] and reset["changed"] == []
    assert ctx.gen_config.get("studio-tiny").changed == []
    history = ctx.gen_config.history("studio-tiny").changes
    assert [(c.action, c.changed_by) for c in history] == [("reset", "local"), ("update", "local"),
                                                           ("seed", "system")]
    assert history[0].new_values == {"top_k": 250, "output_format": "wav"}
