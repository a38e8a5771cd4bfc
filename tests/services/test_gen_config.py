"""Per-model generation settings: the typed settings classes and their JSON Schema, the stored settings with their
audit trail (REST /api/models/{id}/config...), and generation using them (duration, seed policy, output format,
per-request overrides, loudness normalisation)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from studio.errors import NotFound
from studio.gen_settings import (
    MAX_SEED,
    MusicgenSettings,
    MusicgenStereoSettings,
    settings_class,
)
from studio.registry import load_registry, parse_registry
from studio.services.audio_out import PEAK_CEILING, finish_audio, normalize_loudness
from tests.conftest import TINY, registry_dict, rest_client

REPO = Path(__file__).resolve().parents[2]
SR = 32000

# Every setting as a user reads it in the docs: (JSON type, class default, bounds or options). Written out by hand
# so that a setting dropped, retyped or rebounded in studio/gen_settings.py fails here.
FIELDS = {
    "do_sample": ("boolean", True, {}),
    "top_k": ("integer", 250, {"minimum": 0, "maximum": 2048}),
    "top_p": ("number", 0.0, {"minimum": 0, "maximum": 1}),
    "temperature": ("number", 1.0, {"exclusiveMinimum": 0, "maximum": 5}),
    "guidance_scale": ("number", 3.0, {"minimum": 0, "maximum": 20}),
    "seed_policy": ("string", "random", {"enum": ["random", "fixed"]}),
    "seed": ("integer", 0, {"minimum": 0, "maximum": 2**32 - 1}),
    "default_duration_s": ("number", 10.0, {"minimum": 0.5}),  # per model: also maximum = max_duration_s
    "output_format": ("string", "wav", {"enum": ["wav", "flac", "mp3"]}),
    "normalize_loudness": ("boolean", False, {}),
    "target_lufs": ("number", -14.0, {"minimum": -40, "maximum": -6}),
}
STEREO_FIELDS = {**FIELDS, "downmix_to_mono": ("boolean", False, {})}

# Extra entries of the test registry: a stereo model, and a model whose registry.yaml `generation:` block
# differs from the class defaults (and whose duration limit is 12 s).
TUNED_GENERATION = {"top_k": 100, "temperature": 0.8, "output_format": "flac", "seed_policy": "fixed", "seed": 42,
                    "default_duration_s": 4.0}
EXTRA = {"tiny-stereo": {"channels": 2, "display_name": "Tiny Stereo"},
         "tuned": {"max_duration_s": 12, "generation": TUNED_GENERATION}}


def settings_registry() -> dict:
    return registry_dict(**EXTRA)


# ---- helpers ----------------------------------------------------------------------------------------------------
def _config(c, model_id: str = "studio-tiny") -> dict:
    r = c.get(f"/api/models/{model_id}/config")
    assert r.status_code == 200, r.text
    return r.json()


def _history(c, model_id: str = "studio-tiny", **params) -> dict:
    r = c.get(f"/api/models/{model_id}/config/history", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _schema(c, model_id: str = "studio-tiny") -> dict:
    r = c.get(f"/api/models/{model_id}/config/schema")
    assert r.status_code == 200, r.text
    return r.json()


def _put(c, changes, model_id: str = "studio-tiny", **kw):
    return c.put(f"/api/models/{model_id}/config", json=changes, **kw)


def _put_ok(c, changes, model_id: str = "studio-tiny", **kw) -> dict:
    r = _put(c, changes, model_id, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def _snapshot(c, model_id: str) -> tuple[dict, int]:
    """What a refused change must leave untouched: the stored values and the length of the history."""
    return _config(c, model_id)["values"], _history(c, model_id)["total"]


def _generate(c, **body) -> dict:
    r = c.post("/api/generate", json={"prompt": "warm lofi piano", **body})
    assert r.status_code == 200, r.text
    return r.json()


def _audio(c, body: dict):
    r = c.get(body["audio_url"])
    assert r.status_code == 200, r.text
    return r


def _lufs(audio: np.ndarray, rate: int = SR) -> float:
    return pyloudnorm.Meter(rate).integrated_loudness(np.asarray(audio, dtype=np.float64))


def _sine(seconds: float, amplitude: float, freq: float = 1000.0, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]  # (samples, 1)


@pytest.fixture
def api(make_ctx):
    """REST client on a context with the test registry (+ stereo and tuned models); no model loaded."""
    ctx = make_ctx(settings_registry())
    with rest_client(ctx) as c:
        c.ctx = ctx
        yield c


@pytest.fixture(scope="module")
def shared_api(make_module_ctx):
    """`api` shared by the module's tables of refusals and read-only questions (each refusal asserts that nothing
    was stored)."""
    context = make_module_ctx(settings_registry())
    with rest_client(context) as c:
        c.ctx = context
        yield c


@pytest.fixture
def auth_api(make_ctx):
    """REST client of a studio started with --auth ana:pw; the client logs in as ana unless told otherwise."""
    ctx = make_ctx(settings_registry(), auth=("ana", "pw"))
    with rest_client(ctx) as c:
        c.auth = ("ana", "pw")
        yield c


# ---- 1. schema round-trip ---------------------------------------------------------------------------------------
def _model_classes():
    """(id, settings class, the model's max_duration_s or None, stereo?) for the base classes and every model of
    the test registry and of the shipped registry.yaml."""
    cases = [("MusicgenSettings", MusicgenSettings, None, False),
             ("MusicgenStereoSettings", MusicgenStereoSettings, None, True)]
    registries = (("test", parse_registry(settings_registry())), ("shipped", load_registry(REPO / "registry.yaml")))
    for origin, reg in registries:
        for spec in reg.models:
            cases.append((f"{origin}:{spec.id}", spec.settings_class, spec.max_duration_s, spec.channels == 2))
    return cases


CLASSES = _model_classes()


def test_shipped_registry_has_mono_and_stereo_models():
    # the round-trip below covers both families through the shipped registry too
    stereo = {case_id: is_stereo for case_id, _, _, is_stereo in CLASSES if case_id.startswith("shipped:")}
    assert stereo.get("shipped:musicgen-stereo-small") is True and stereo.get("shipped:musicgen-small") is False


@pytest.mark.parametrize("cls,max_duration,stereo", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_schema_lists_every_field_with_type_default_bounds_and_help(cls, max_duration, stereo):
    expected = STEREO_FIELDS if stereo else FIELDS
    schema = cls.model_json_schema()
    props = schema["properties"]
    assert set(props) == set(expected) == set(cls.model_fields)
    assert schema.get("additionalProperties") is False  # an unknown key is refused, and the schema says so
    for name, (json_type, default, bounds) in expected.items():
        prop = props[name]
        assert prop["type"] == json_type, name
        if name == "default_duration_s" and max_duration is not None:
            default = min(10.0, max_duration)
            bounds = {**bounds, "maximum": max_duration}
        assert prop["default"] == default and type(prop["default"]) is type(default), name
        for key, value in bounds.items():
            assert prop.get(key) == value, f"{name}.{key}: {prop.get(key)!r} != {value!r}"
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"):
            if key not in bounds:
                assert key not in prop, f"{name} has an unexpected {key}"
        assert isinstance(prop.get("title"), str) and prop["title"].strip(), name
        assert isinstance(prop.get("description"), str) and len(prop["description"]) > 20, name
    if max_duration is None:
        assert "maximum" not in props["default_duration_s"]


@pytest.mark.parametrize("cls,max_duration,stereo", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_defaults_validate_and_instances_round_trip(cls, max_duration, stereo):
    defaults = cls()
    from_schema = {name: prop["default"] for name, prop in cls.model_json_schema()["properties"].items()}
    assert cls.model_validate(from_schema) == defaults
    assert cls.model_validate_json(json.dumps(from_schema)) == defaults
    changed = {"do_sample": False, "top_k": 17, "top_p": 0.9, "temperature": 0.35, "guidance_scale": 1.5,
               "seed_policy": "fixed", "seed": MAX_SEED, "default_duration_s": 0.5, "output_format": "mp3",
               "normalize_loudness": True, "target_lufs": -23.0}
    if stereo:
        changed["downmix_to_mono"] = True
    instance = cls.model_validate(changed)
    assert instance != defaults
    assert cls.model_validate(instance.model_dump()) == instance
    assert cls.model_validate_json(instance.model_dump_json()) == instance
    assert instance.model_dump() == changed


def test_per_model_class_follows_the_model_shape():
    assert settings_class("transformers", 1, 30.0) is settings_class("transformers", 1, 30.0)  # cached
    assert issubclass(settings_class("transformers", 2, 30.0), MusicgenStereoSettings)
    assert not issubclass(settings_class("transformers", 1, 30.0), MusicgenStereoSettings)
    short = settings_class("transformers", 1, 8.0)
    assert short().default_duration_s == 8.0  # the class default never exceeds the model's limit
    assert short(default_duration_s=8.0).default_duration_s == 8.0
    with pytest.raises(ValueError):
        short(default_duration_s=8.5)


@pytest.mark.parametrize("model_id,max_duration", [("studio-tiny", 30), ("tiny-hub", 8), ("tuned", 12),
                                                   ("tiny-stereo", 30)])
def test_schema_endpoint_has_the_models_limit_and_registry_defaults(shared_api, model_id, max_duration):
    api = shared_api
    schema = _schema(api, model_id)
    spec = api.ctx.registry.get(model_id)
    assert schema["properties"]["default_duration_s"]["maximum"] == max_duration
    assert {k: p["default"] for k, p in schema["properties"].items()} == spec.generation.model_dump()
    assert ("downmix_to_mono" in schema["properties"]) is (model_id == "tiny-stereo")


def test_registry_generation_block_sets_schema_and_config_defaults(api):
    schema = _schema(api, "tuned")["properties"]
    config = _config(api, "tuned")
    expected = {**{k: v[1] for k, v in FIELDS.items()}, **TUNED_GENERATION}
    assert {k: p["default"] for k, p in schema.items()} == expected
    assert config["defaults"] == expected
    assert config["values"] == expected  # seeded from registry.yaml
    assert config["changed"] == [] and config["ignored"] == {}
    # a model without those values keeps the class defaults (top_k 250), and tiny-hub's duration fits its 8 s
    assert _schema(api, "studio-tiny")["properties"]["top_k"]["default"] == 250
    assert _config(api, "tiny-hub")["defaults"]["default_duration_s"] == 8.0


# ---- 2. invalid PUT bodies (table) -------------------------------------------------------------------------------
BAD_PUTS = [
    # (case, model, body, {bad field: fragment of its message})
    ("int as text", "studio-tiny", {"top_k": "250"}, {"top_k": "whole number"}),
    ("float for int", "studio-tiny", {"top_k": 5.0}, {"top_k": "whole number"}),
    ("fraction for int", "studio-tiny", {"seed": 1.5}, {"seed": "whole number"}),
    ("int for bool", "studio-tiny", {"do_sample": 1}, {"do_sample": "true or false"}),
    ("text for bool", "studio-tiny", {"normalize_loudness": "true"}, {"normalize_loudness": "true or false"}),
    ("bool for number", "studio-tiny", {"guidance_scale": True}, {"guidance_scale": "number"}),
    ("text for number", "studio-tiny", {"temperature": "0.7"}, {"temperature": "number"}),
    ("null number", "studio-tiny", {"temperature": None}, {"temperature": "number"}),
    ("null int", "studio-tiny", {"top_k": None}, {"top_k": "whole number"}),
    ("null bool", "studio-tiny", {"do_sample": None}, {"do_sample": "true or false"}),
    ("null option", "studio-tiny", {"output_format": None}, {"output_format": "one of"}),
    ("top_k below 0", "studio-tiny", {"top_k": -1}, {"top_k": "at least 0"}),
    ("top_k above 2048", "studio-tiny", {"top_k": 2049}, {"top_k": "at most 2048"}),
    ("top_p below 0", "studio-tiny", {"top_p": -0.01}, {"top_p": "at least 0"}),
    ("top_p above 1", "studio-tiny", {"top_p": 1.01}, {"top_p": "at most 1"}),
    ("temperature 0 (exclusive minimum)", "studio-tiny", {"temperature": 0}, {"temperature": "more than 0"}),
    ("temperature 0.0", "studio-tiny", {"temperature": 0.0}, {"temperature": "more than 0"}),
    ("temperature negative", "studio-tiny", {"temperature": -1.0}, {"temperature": "more than 0"}),
    ("temperature above 5", "studio-tiny", {"temperature": 5.01}, {"temperature": "at most 5"}),
    ("guidance negative", "studio-tiny", {"guidance_scale": -0.1}, {"guidance_scale": "at least 0"}),
    ("guidance above 20", "studio-tiny", {"guidance_scale": 20.5}, {"guidance_scale": "at most 20"}),
    ("seed negative", "studio-tiny", {"seed": -1}, {"seed": "at least 0"}),
    ("seed above 2**32-1", "studio-tiny", {"seed": 2**32}, {"seed": "at most 4294967295"}),
    ("target_lufs below -40", "studio-tiny", {"target_lufs": -40.5}, {"target_lufs": "at least -40"}),
    ("target_lufs above -6", "studio-tiny", {"target_lufs": -5.5}, {"target_lufs": "at most -6"}),
    ("duration below 0.5", "studio-tiny", {"default_duration_s": 0.4}, {"default_duration_s": "at least 0.5"}),
    ("duration above studio-tiny's 30 s", "studio-tiny", {"default_duration_s": 30.5},
     {"default_duration_s": "at most 30"}),
    ("duration above tiny-hub's 8 s", "tiny-hub", {"default_duration_s": 9}, {"default_duration_s": "at most 8"}),
    ("duration above tuned's 12 s", "tuned", {"default_duration_s": 12.5}, {"default_duration_s": "at most 12"}),
    ("unknown key", "studio-tiny", {"beam_size": 4}, {"beam_size": "unknown setting"}),
    ("misspelt key", "studio-tiny", {"topk": 100}, {"topk": "unknown setting"}),
    ("format in capitals", "studio-tiny", {"output_format": "WAV"}, {"output_format": "one of"}),
    ("format not offered", "studio-tiny", {"output_format": "ogg"}, {"output_format": "one of"}),
    ("unknown seed policy", "studio-tiny", {"seed_policy": "sometimes"}, {"seed_policy": "one of"}),
    ("stereo-only key on a mono model", "studio-tiny", {"downmix_to_mono": True},
     {"downmix_to_mono": "unknown setting"}),
    ("stereo key of wrong type", "tiny-stereo", {"downmix_to_mono": "yes"}, {"downmix_to_mono": "true or false"}),
    ("several bad fields at once", "studio-tiny",
     {"top_k": "many", "top_p": 2, "output_format": "ogg", "temperature": 0, "beam": 1},
     {"top_k": "whole number", "top_p": "at most 1", "output_format": "one of", "temperature": "more than 0",
      "beam": "unknown setting"}),
    ("good values with one bad one", "tiny-stereo",
     {"top_k": 100, "output_format": "flac", "downmix_to_mono": True, "target_lufs": 0},
     {"target_lufs": "at most -6"}),
]


@pytest.mark.parametrize("model_id,body,bad", [b[1:] for b in BAD_PUTS], ids=[b[0] for b in BAD_PUTS])
def test_invalid_put_is_422_naming_each_bad_field_and_stores_nothing(shared_api, model_id, body, bad):
    api = shared_api
    before = _snapshot(api, model_id)
    r = _put(api, body, model_id)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_settings"
    messages = {e["field"]: e["message"] for e in detail["errors"]}
    assert set(messages) == set(bad)
    for field, fragment in bad.items():
        assert fragment in messages[field], (field, messages[field])
        assert field in detail["message"]  # the sentence a person reads names the field too
    assert _snapshot(api, model_id) == before


BAD_BODIES = [
    # (case, raw JSON body)
    ("a list", "[1, 2]"),
    ("a list of pairs", '[["top_k", 5]]'),
    ("a string", '"top_k=5"'),
    ("a number", "5"),
    ("null", "null"),
]


@pytest.mark.parametrize("raw", [b[1] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_put_body_that_is_not_an_object_is_invalid_body(shared_api, raw):
    api = shared_api
    before = _snapshot(api, "studio-tiny")
    r = api.put("/api/models/studio-tiny/config", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["code"] == "invalid_body"
    assert _snapshot(api, "studio-tiny") == before


RAW_BAD_PUTS = [
    # (case, raw body, bad field, fragment): numbers Python's JSON parser reads as non-finite or as a float
    ("number overflowing to infinity", '{"temperature": 1e400}', "temperature", "finite"),
    ("NaN token", '{"top_p": NaN}', "top_p", "finite"),
    ("-Infinity token", '{"target_lufs": -Infinity}', "target_lufs", "finite"),
    ("exponent form for an int", '{"top_k": 1e2}', "top_k", "whole number"),
    ("seed beyond 64 bits", '{"seed": 100000000000000000000000}', "seed", "at most 4294967295"),
]


@pytest.mark.parametrize("raw,field,fragment", [b[1:] for b in RAW_BAD_PUTS], ids=[b[0] for b in RAW_BAD_PUTS])
def test_non_finite_and_odd_numbers_are_refused(shared_api, raw, field, fragment):
    api = shared_api
    before = _snapshot(api, "studio-tiny")
    r = api.put("/api/models/studio-tiny/config", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_settings"
    assert [e["field"] for e in detail["errors"]] == [field] and fragment in detail["errors"][0]["message"]
    assert _snapshot(api, "studio-tiny") == before


def test_put_body_that_is_not_json_is_invalid_json(shared_api):
    api = shared_api
    before = _snapshot(api, "studio-tiny")
    r = api.put("/api/models/studio-tiny/config", content="{top_k: 5", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]["code"] == "invalid_json"
    assert _snapshot(api, "studio-tiny") == before


def test_service_refuses_a_non_object_naming_the_body(make_ctx):
    from studio.errors import InvalidValues

    ctx = make_ctx()
    with pytest.raises(InvalidValues) as info:
        ctx.gen_config.update("studio-tiny", [("top_k", 5)])
    assert info.value.status == 422 and info.value.code == "invalid_settings"
    assert info.value.extra["errors"] == [{"field": "(body)", "message": "expected an object"}]
    assert ctx.gen_config.history("studio-tiny").total == 1


# ---- 3. schema-driven invalid and valid values -------------------------------------------------------------------
WRONG_TYPE = {  # JSON values of another type than the property's (strict: no coercion of "5", 1 or 5.0)
    "integer": ["12", 1.5, 3.0, True, None, [1], {"v": 1}],
    "number": ["0.5", True, None, [0.5]],
    "boolean": [1, 0, "true", "false", None, [True]],
    "string": [5, True, None, ["wav"]],
}


def invalid_values(prop: dict) -> list:
    """Values the property's schema refuses: wrong JSON type, just outside each bound, an option not offered."""
    values = list(WRONG_TYPE[prop["type"]])
    number = float if prop["type"] == "number" else (lambda v: v)
    if "minimum" in prop:
        values.append(number(prop["minimum"] - 1))
    if "maximum" in prop:
        values.append(number(prop["maximum"] + 1))
    if "exclusiveMinimum" in prop:
        values += [number(prop["exclusiveMinimum"]), number(prop["exclusiveMinimum"] - 1)]
    if "exclusiveMaximum" in prop:
        values.append(number(prop["exclusiveMaximum"]))
    if "enum" in prop:
        values += ["not-an-option", "", prop["enum"][0].upper()]
    return values


def valid_values(prop: dict) -> list:
    """Values the property's schema accepts: each bound, just inside an exclusive bound, every option."""
    if prop["type"] == "boolean":
        return [True, False]
    if "enum" in prop:
        return list(prop["enum"])
    values = [prop[k] for k in ("minimum", "maximum") if k in prop]
    step = prop.get("x-step", 1)
    if "exclusiveMinimum" in prop:
        values.append(prop["exclusiveMinimum"] + step)
    if prop["type"] == "number":
        values = [float(v) for v in values]
    return values


@pytest.mark.parametrize("model_id", ["studio-tiny", "tiny-hub", "tiny-stereo", "tuned"])
def test_schema_driven_invalid_values_are_refused_and_valid_ones_stored(api, model_id):
    schema = _schema(api, model_id)
    assert set(schema["properties"]) == set(STEREO_FIELDS if model_id == "tiny-stereo" else FIELDS)
    failures, tried = [], 0
    for name, prop in schema["properties"].items():
        invalid = invalid_values(prop)
        assert len(invalid) >= 4, name
        for value in invalid:
            tried += 1
            before = _snapshot(api, model_id)
            r = _put(api, {name: value}, model_id)
            fields = [e["field"] for e in r.json()["detail"].get("errors", [])] if r.status_code == 422 else None
            if r.status_code != 422 or fields != [name] or _snapshot(api, model_id) != before:
                failures.append(f"{name}={value!r}: {r.status_code} {r.text[:200]}")
    for name, prop in schema["properties"].items():
        valid = valid_values(prop)
        assert len(valid) >= 2, name
        for value in valid:
            tried += 1
            r = _put(api, {name: value}, model_id)
            stored = _config(api, model_id)["values"].get(name)
            if r.status_code != 200 or stored != value or type(stored) is not type(value):
                failures.append(f"valid {name}={value!r}: {r.status_code}, read back {stored!r} {r.text[:200]}")
    assert tried > 60
    assert not failures, "\n".join(failures)


def test_schema_driven_generator_finds_the_declared_bounds():
    # the generator itself: what it derives for a few known properties (so that the test above tests something)
    schema = settings_class("transformers", 1, 8.0).model_json_schema()["properties"]
    assert invalid_values(schema["top_k"])[-2:] == [-1, 2049]
    assert invalid_values(schema["temperature"])[-3:] == [6.0, 0.0, -1.0]
    assert invalid_values(schema["output_format"])[-3:] == ["not-an-option", "", "WAV"]
    assert 9.0 in invalid_values(schema["default_duration_s"])
    assert valid_values(schema["default_duration_s"]) == [0.5, 8.0]
    assert valid_values(schema["temperature"]) == [5.0, 0.05]
    assert valid_values(schema["seed_policy"]) == ["random", "fixed"]


# ---- 4. audit records --------------------------------------------------------------------------------------------
def test_update_is_recorded_with_old_and_new_values_of_changed_fields_only(db_url, api):
    view = _put_ok(api, {"top_k": 100, "temperature": 0.8, "top_p": 0.0})  # top_p is unchanged
    assert view["values"]["top_k"] == 100 and view["values"]["temperature"] == 0.8
    assert sorted(view["changed"]) == ["temperature", "top_k"]
    assert view["updated_by"] == "local" and view["updated_at"]
    history = _history(api)
    assert history["total"] == 2
    record = history["changes"][0]
    assert record["action"] == "update" and record["changed_by"] == "local" and record["model_id"] == "studio-tiny"
    assert record["old_values"] == {"top_k": 250, "temperature": 1.0}
    assert record["new_values"] == {"top_k": 100, "temperature": 0.8}
    # a second change records the previous stored value as old
    _put_ok(api, {"top_k": 50})
    latest = _history(api)["changes"][0]
    assert latest["old_values"] == {"top_k": 100} and latest["new_values"] == {"top_k": 50}
    # another model's history is its own
    assert _history(api, "tiny-hub")["total"] == 1


def test_saving_identical_values_adds_no_record(api):
    _put_ok(api, {"top_k": 100})
    before = _snapshot(api, "studio-tiny")
    for same in ({"top_k": 100}, {}, _config(api)["values"]):
        view = _put_ok(api, same)
        assert view["values"]["top_k"] == 100
    assert _snapshot(api, "studio-tiny") == before


def test_changes_are_recorded_with_the_basic_auth_user(auth_api):
    for creds in (None, ("ana", "wrong"), ("bob", "pw")):
        refused = auth_api.put("/api/models/studio-tiny/config", json={"top_k": 1}, auth=creds)
        assert refused.status_code == 401, creds
    assert _config(auth_api)["values"]["top_k"] == 250 and _history(auth_api)["total"] == 1
    view = _put_ok(auth_api, {"top_k": 1})
    assert view["updated_by"] == "ana"
    record = _history(auth_api)["changes"][0]
    assert record["changed_by"] == "ana" and record["action"] == "update" and record["new_values"] == {"top_k": 1}
    reset = auth_api.post("/api/models/studio-tiny/config/reset")
    assert reset.status_code == 200 and reset.json()["updated_by"] == "ana"
    history = _history(auth_api)
    assert [(c["action"], c["changed_by"]) for c in history["changes"]] == [
        ("reset", "ana"), ("update", "ana"), ("seed", "system")]


def test_history_is_newest_first_with_limit_offset_and_total(api):
    for k in (1, 2, 3):
        _put_ok(api, {"top_k": k})
    full = _history(api)
    assert full["total"] == 4 and full["model_id"] == "studio-tiny"
    assert [c["action"] for c in full["changes"]] == ["update", "update", "update", "seed"]
    assert [c["new_values"].get("top_k") for c in full["changes"]] == [3, 2, 1, 250]
    times = [c["changed_at"] for c in full["changes"]]
    assert times == sorted(times, reverse=True)
    page = _history(api, limit=2, offset=1)
    assert page["total"] == 4 and [c["new_values"]["top_k"] for c in page["changes"]] == [2, 1]
    assert [c["id"] for c in page["changes"]] == [c["id"] for c in full["changes"][1:3]]
    assert _history(api, limit=1)["changes"][0]["new_values"] == {"top_k": 3}
    beyond = _history(api, offset=10)
    assert beyond["total"] == 4 and beyond["changes"] == []
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "ten"}):
        r = api.get("/api/models/studio-tiny/config/history", params=bad)
        assert r.status_code == 422 and r.json()["detail"]["code"] == "invalid_parameter", bad
        assert [e["field"] for e in r.json()["detail"]["errors"]] == list(bad), r.text


def test_seeding_is_recorded_once_by_system(db_url, make_ctx):
    ctx = make_ctx(settings_registry())
    for spec in ctx.registry.models:
        history = ctx.gen_config.history(spec.id)
        assert history.total == 1, spec.id
        record = history.changes[0]
        assert (record.action, record.changed_by, record.old_values) == ("seed", "system", {})
        assert record.new_values == spec.generation.model_dump()
        view = ctx.gen_config.get(spec.id)
        assert view.updated_by == "system" and view.values == view.defaults
    ctx.gen_config.update("studio-tiny", {"top_k": 100}, by="ana")
    again = make_ctx(settings_registry(), data_dir=ctx.settings.data_dir)  # the next start on the same data
    assert again.gen_config.seed() == []
    for spec in again.registry.models:
        assert again.gen_config.history(spec.id).total == (2 if spec.id == "studio-tiny" else 1), spec.id
    assert again.gen_config.get("studio-tiny").values["top_k"] == 100


def test_a_model_new_in_the_registry_is_seeded_at_next_start_keeping_stored_values(make_ctx):
    first = make_ctx(registry_dict())
    first.gen_config.update("studio-tiny", {"top_k": 100, "output_format": "mp3"})
    with pytest.raises(NotFound):
        first.gen_config.get("newcomer")
    grown = registry_dict(newcomer={"generation": {"top_k": 7, "seed_policy": "fixed"}})
    second = make_ctx(grown, data_dir=first.settings.data_dir)
    new = second.gen_config.get("newcomer")
    assert new.values["top_k"] == 7 and new.values["seed_policy"] == "fixed" and new.changed == []
    history = second.gen_config.history("newcomer")
    assert history.total == 1 and history.changes[0].action == "seed" and history.changes[0].changed_by == "system"
    kept = second.gen_config.get("studio-tiny")
    assert kept.values["top_k"] == 100 and kept.values["output_format"] == "mp3"
    assert sorted(kept.changed) == ["output_format", "top_k"]
    assert second.gen_config.history("studio-tiny").total == 2  # seed + update: not seeded again


# ---- 5. reset and unknown models ---------------------------------------------------------------------------------
def test_reset_restores_registry_defaults_and_records_old_values(db_url, api):
    _put_ok(api, {"top_k": 7, "output_format": "wav", "seed_policy": "fixed"}, "tuned")
    assert sorted(_config(api, "tuned")["changed"]) == ["output_format", "top_k"]  # tuned's policy is fixed already
    r = api.post("/api/models/tuned/config/reset")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["values"] == view["defaults"] == {**{k: v[1] for k, v in FIELDS.items()}, **TUNED_GENERATION}
    assert view["changed"] == [] and view["updated_by"] == "local"
    assert _config(api, "tuned")["values"] == view["defaults"]
    history = _history(api, "tuned")
    assert history["total"] == 3
    record = history["changes"][0]
    assert record["action"] == "reset" and record["changed_by"] == "local"
    assert record["old_values"] == {"top_k": 7, "output_format": "wav"}
    assert record["new_values"] == {"top_k": 100, "output_format": "flac"}


def test_reset_of_unchanged_settings_is_still_recorded(api):
    r = api.post("/api/models/studio-tiny/config/reset")
    assert r.status_code == 200 and r.json()["changed"] == []
    history = _history(api)
    assert history["total"] == 2 and history["changes"][0]["action"] == "reset"
    assert history["changes"][0]["old_values"] == {} and history["changes"][0]["new_values"] == {}


NOT_FOUND_ROUTES = [
    ("get config", "GET", "/api/models/nope/config", None),
    ("put config", "PUT", "/api/models/nope/config", {"top_k": 5}),
    ("schema", "GET", "/api/models/nope/config/schema", None),
    ("reset", "POST", "/api/models/nope/config/reset", None),
    ("history", "GET", "/api/models/nope/config/history", None),
]


@pytest.mark.parametrize("method,path,body", [r[1:] for r in NOT_FOUND_ROUTES], ids=[r[0] for r in NOT_FOUND_ROUTES])
def test_unknown_model_is_404_on_every_config_route(shared_api, method, path, body):
    api = shared_api
    r = api.request(method, path, json=body)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "model_not_found" and detail["model_id"] == "nope"
    assert "studio-tiny" in detail["message"]  # tells the user which models exist


# ---- 6. generation uses the stored settings ----------------------------------------------------------------------
def test_omitted_duration_uses_the_stored_default_duration(client):
    _put_ok(client, {"default_duration_s": 0.5})
    body = _generate(client, seed=3)
    assert body["duration_s"] == 0.5 and body["settings"]["default_duration_s"] == 0.5
    data, rate = sf.read(io.BytesIO(_audio(client, body).content))
    assert rate == SR and len(data) == SR // 2
    assert client.get(f"/api/jobs/{body['job_id']}").json()["duration_s"] == 0.5


def test_fixed_seed_policy_repeats_the_audio_and_a_request_seed_wins(client):
    _put_ok(client, {"seed_policy": "fixed", "seed": 1234, "default_duration_s": 0.5})
    first, second = _generate(client), _generate(client)
    assert first["seed"] == second["seed"] == 1234
    assert client.get(f"/api/jobs/{first['job_id']}").json()["seed"] == 1234
    a, b = _audio(client, first).content, _audio(client, second).content
    assert a == b  # bit-identical files
    explicit = _generate(client, seed=7)
    assert explicit["seed"] == 7 and client.get(f"/api/jobs/{explicit['job_id']}").json()["seed"] == 7
    assert _audio(client, explicit).content != a  # the seed is what made the two equal


def test_random_seed_policy_draws_a_new_seed_each_time(client):
    _put_ok(client, {"default_duration_s": 0.5})
    assert _config(client)["values"]["seed_policy"] == "random"
    seeds = {_generate(client)["seed"] for _ in range(3)}
    assert len(seeds) == 3 and all(0 <= s <= MAX_SEED for s in seeds)


FORMATS = [("wav", "audio/wav", "WAV"), ("flac", "audio/flac", "FLAC"), ("mp3", "audio/mpeg", "MP3")]


@pytest.mark.parametrize("fmt,content_type,sf_format", FORMATS, ids=[f[0] for f in FORMATS])
def test_output_format_sets_file_type_extension_and_content_type(ctx, client, fmt, content_type, sf_format):
    _put_ok(client, {"output_format": fmt, "default_duration_s": 1.0})
    body = _generate(client, seed=5)
    r = _audio(client, body)
    assert r.headers["content-type"] == content_type
    name = f'warm-lofi-piano_job{body["job_id"]}.{fmt}'  # named after the prompt and the job
    assert r.headers["content-disposition"].endswith(f'filename="{name}"')
    info = sf.info(io.BytesIO(r.content))
    assert info.format == sf_format and info.samplerate == SR and info.channels == 1
    data, rate = sf.read(io.BytesIO(r.content))
    assert rate == SR
    if fmt == "mp3":  # the encoder pads with up to a frame or two of silence
        assert abs(len(data) - SR) <= 2 * 1152, len(data)
    else:
        assert len(data) == SR
    assert np.abs(data).max() > 0.01  # the audio, not silence
    files = sorted(p.name for p in ctx.settings.outputs_dir.glob(f"*_job{body['job_id']}.*"))
    # the right extension and the job's codes beside it, no leftover temp file
    assert files == sorted([name, f"warm-lofi-piano_job{body['job_id']}.codes.safetensors"])


BAD_OVERRIDES = [
    # (case, settings override, the bad field named in `errors`): all 422 invalid_settings, like the config PUT
    ("int as text", {"top_k": "5"}, "top_k"),
    ("exclusive minimum", {"temperature": 0}, "temperature"),
    ("format not offered", {"output_format": "ogg"}, "output_format"),
    ("duration above the model's max", {"default_duration_s": 31}, "default_duration_s"),
    ("int for bool", {"normalize_loudness": 1}, "normalize_loudness"),
    ("null", {"guidance_scale": None}, "guidance_scale"),
    ("unknown key", {"beam_size": 4}, "beam_size"),
    ("stereo-only key on a mono model", {"downmix_to_mono": True}, "downmix_to_mono"),
]


@pytest.mark.parametrize("override,field", [b[1:] for b in BAD_OVERRIDES], ids=[b[0] for b in BAD_OVERRIDES])
def test_bad_per_request_override_is_422_and_records_no_job(shared_client, override, field):
    client = shared_client
    jobs_before = client.get("/api/jobs").json()
    stored = _config(client)["values"]
    r = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "settings": override})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_settings"
    assert [e["field"] for e in detail["errors"]] == [field]
    assert "top_k" in detail["allowed"]
    assert client.get("/api/jobs").json() == jobs_before
    assert _config(client)["values"] == stored


def test_override_applies_to_one_request_and_the_job_records_every_setting(client):
    stored = _put_ok(client, {"top_k": 100, "seed_policy": "fixed", "seed": 99})["values"]
    overrides = {"temperature": 0.5, "output_format": "flac", "default_duration_s": 0.5}
    body = _generate(client, settings=overrides)
    expected = {**stored, **overrides}
    assert body["settings"] == expected and body["seed"] == 99 and body["duration_s"] == 0.5
    assert client.get(f"/api/jobs/{body['job_id']}").json()["settings"] == expected
    assert _audio(client, body).headers["content-type"] == "audio/flac"
    assert _config(client)["values"] == stored  # not saved
    plain = _generate(client)
    assert plain["settings"] == stored and _audio(client, plain).headers["content-type"] == "audio/wav"


def test_stored_loudness_normalisation_reaches_the_target(client):
    _put_ok(client, {"default_duration_s": 1.0})
    raw = _generate(client, seed=5)
    raw_audio, _ = sf.read(io.BytesIO(_audio(client, raw).content))
    _put_ok(client, {"normalize_loudness": True, "target_lufs": -30.0})
    body = _generate(client, seed=5)
    assert body["settings"]["normalize_loudness"] is True and body["settings"]["target_lufs"] == -30.0
    audio, _ = sf.read(io.BytesIO(_audio(client, body).content))
    assert abs(_lufs(raw_audio) - (-30.0)) > 1.0  # the model's own level is elsewhere: normalising did it
    assert abs(_lufs(audio) - (-30.0)) < 0.5
    assert np.abs(audio).max() <= PEAK_CEILING + 1e-4


# ---- loudness normalisation and mix-down, unit level -------------------------------------------------------------
@pytest.mark.parametrize("target", [-40.0, -30.0, -23.0, -14.0, -9.0])
def test_normalize_loudness_reaches_the_target_on_a_sine(target):
    sine = _sine(2.0, 0.03)  # 1 kHz at about -33 LUFS
    assert abs(_lufs(sine) - target) > 2.0
    out = normalize_loudness(sine, SR, target)
    assert out.shape == sine.shape
    assert abs(_lufs(out) - target) < 0.5
    assert np.abs(out).max() <= PEAK_CEILING + 1e-6


def test_normalize_loudness_keeps_peaks_under_minus_one_dbfs():
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal((2 * SR, 2))).astype(np.float32)  # stereo; crest factor ~4
    out = normalize_loudness(noise, SR, -6.0)  # reaching -6 LUFS would need peaks far above full scale
    peak = np.abs(out).max()
    assert peak <= PEAK_CEILING + 1e-6
    assert peak >= PEAK_CEILING * 0.99  # limited to the ceiling, not scaled down further
    assert _lufs(out) < -6.0 and _lufs(out) > _lufs(noise) + 3  # louder, but the peak ceiling won
    assert out.shape == noise.shape


UNDEFINED_LOUDNESS = [
    ("silence", np.zeros((2 * SR, 1), dtype=np.float32)),
    ("0.3 s clip", _sine(0.3, 0.03)),
    ("0.39 s clip", _sine(0.39, 0.03)),
    ("empty", np.zeros((0, 1), dtype=np.float32)),
]


@pytest.mark.parametrize("audio", [c[1] for c in UNDEFINED_LOUDNESS], ids=[c[0] for c in UNDEFINED_LOUDNESS])
def test_normalize_loudness_leaves_undefined_loudness_alone(audio):
    out = normalize_loudness(audio.copy(), SR, -14.0)
    assert out.shape == audio.shape and np.array_equal(out, audio)
    assert np.isfinite(out).all()


def test_finish_audio_mixes_stereo_down_when_asked():
    stereo_cls = settings_class("transformers", 2, 30.0)
    left, right = _sine(1.0, 0.5), _sine(1.0, 0.1, freq=440.0)
    audio = np.concatenate([left, right], axis=1)
    mixed = finish_audio(audio, SR, stereo_cls(downmix_to_mono=True))
    assert mixed.shape == (SR, 1)
    assert np.allclose(mixed[:, 0], (left[:, 0] + right[:, 0]) / 2)
    kept = finish_audio(audio, SR, stereo_cls())
    assert kept.shape == (SR, 2) and np.array_equal(kept, audio)
    mono = finish_audio(audio[:, :1], SR, settings_class("transformers", 1, 30.0)())
    assert mono.shape == (SR, 1)
    both = finish_audio(audio, SR, stereo_cls(downmix_to_mono=True, normalize_loudness=True, target_lufs=-20.0))
    assert both.shape == (SR, 1) and abs(_lufs(both) - (-20.0)) < 0.5


# ---- 7. stored values no longer valid -----------------------------------------------------------------------------
def test_stored_value_invalid_under_a_new_limit_falls_back_to_the_default(make_ctx):
    first = make_ctx(registry_dict())
    first.gen_config.update("studio-tiny", {"default_duration_s": 25.0, "top_k": 100})
    data_dir = first.settings.data_dir
    first.engine.dispose()
    lowered = registry_dict()
    lowered["models"][0] = {**TINY, "max_duration_s": 1}  # a deployment caps studio-tiny at 1 s
    ctx = make_ctx(lowered, data_dir=data_dir)
    with rest_client(ctx) as c:
        view = _config(c)
        assert view["values"]["default_duration_s"] == 1.0 == view["defaults"]["default_duration_s"]
        assert list(view["ignored"]) == ["default_duration_s"] and "at most 1" in view["ignored"]["default_duration_s"]
        assert view["values"]["top_k"] == 100 and view["changed"] == ["top_k"]  # the valid stored value is kept
        assert _schema(c)["properties"]["default_duration_s"]["maximum"] == 1
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        body = _generate(c, seed=1)
        assert body["duration_s"] == 1.0 and body["settings"]["top_k"] == 100
        data, _ = sf.read(io.BytesIO(_audio(c, body).content))
        assert len(data) == SR
        # saving another setting works and stores a valid duration
        view = _put_ok(c, {"top_k": 50})
        assert view["ignored"] == {} and view["values"]["default_duration_s"] == 1.0


def test_stored_setting_the_model_no_longer_has_is_reported_and_dropped(make_ctx):
    """A stereo model made mono in registry.yaml: its stored downmix_to_mono is listed as ignored, not an error."""
    first = make_ctx(registry_dict(duo={"channels": 2}))
    first.gen_config.update("duo", {"downmix_to_mono": True, "top_k": 90})
    data_dir = first.settings.data_dir
    first.engine.dispose()
    ctx = make_ctx(registry_dict(duo={"channels": 1}), data_dir=data_dir)
    view = ctx.gen_config.get("duo")
    assert "downmix_to_mono" not in view.values and view.values["top_k"] == 90
    assert view.ignored == {"downmix_to_mono": "no longer a setting of this model"}
    ctx.gen_config.update("duo", {"top_k": 91})  # the next save stores only the model's own settings
    assert ctx.gen_config.get("duo").ignored == {}
