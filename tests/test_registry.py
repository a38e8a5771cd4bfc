"""registry.yaml is validated at start-up with errors naming the entry and the field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from studio.errors import RegistryError
from studio.registry import load_registry, parse_registry
from tests.conftest import registry_dict

REPO_REGISTRY = Path(__file__).resolve().parents[1] / "registry.yaml"


def test_shipped_registry_has_every_musicgen_model_and_the_tiny_one():
    reg = load_registry(REPO_REGISTRY)
    expected = {"musicgen-small", "musicgen-medium", "musicgen-large", "musicgen-melody", "musicgen-stereo-small",
                "studio-tiny"}
    assert expected <= set(reg.ids())
    for spec in reg.models:
        if spec.id.startswith("musicgen-"):
            assert spec.source.hub == f"facebook/{spec.id}"
        assert spec.max_tokens == round(spec.max_duration_s * spec.frame_rate)
    assert reg.get("musicgen-stereo-small").channels == 2
    assert reg.get(reg.default_model).id == "musicgen-small"


def test_shipped_registry_has_the_music_clap_as_default_and_the_tiny_clap():
    reg = load_registry(REPO_REGISTRY)
    music = reg.evaluation_model(reg.default_evaluation_model)
    assert (music.id, music.kind, music.source.hub, music.sample_rate) == ("clap-music", "clap",
                                                                          "laion/larger_clap_music", 48000)
    tiny = reg.evaluation_model("studio-tiny-clap")
    assert tiny.is_builtin and tiny.sample_rate == 48000
    assert not set(reg.ids()) & {s.id for s in reg.evaluation_models}  # an id names one thing


def _broken(mutate):
    raw = copy.deepcopy(registry_dict())
    mutate(raw)
    return raw


def _set(idx, key, value):
    def mutate(raw):
        raw["models"][idx][key] = value
    return mutate


def _drop(idx, key):
    def mutate(raw):
        del raw["models"][idx][key]
    return mutate


def _set_eval(idx, key, value):
    def mutate(raw):
        raw["evaluation_models"][idx][key] = value
    return mutate


def _drop_eval(idx, key):
    def mutate(raw):
        del raw["evaluation_models"][idx][key]
    return mutate


BROKEN = [
    # (case id, mutation, text the error must contain)
    ("negative max duration", _set(0, "max_duration_s", -5), "model 'studio-tiny': field 'max_duration_s'"),
    ("zero sample rate", _set(1, "sample_rate", 0), "model 'tiny-hub': field 'sample_rate'"),
    ("missing memory", _drop(0, "memory_gb"), "field 'memory_gb': Field required"),
    ("unknown field", _set(0, "colour", "red"), "field 'colour'"),
    ("bad channels", _set(0, "channels", 6), "field 'channels'"),
    ("unknown backend", _set(0, "backend", "jax"), "field 'backend'"),
    ("two sources", _set(1, "source", {"hub": "a/b", "builtin": "studio-tiny"}), "exactly one of 'hub', 'builtin' or 'folder'"),
    ("unknown builtin", _set(0, "source", {"builtin": "nope"}), "unknown builtin 'nope'"),
    ("bad hub id", _set(1, "source", {"hub": "not a repo"}), "model 'tiny-hub': field 'source.hub'"),
    ("top_p over 1", _set(0, "generation", {"top_p": 1.5}), "field 'generation.top_p'"),
    ("unknown setting", _set(0, "generation", {"beam": 2}), "field 'generation.beam'"),
    ("string parameters", _set(0, "parameters", "many"), "field 'parameters'"),
    ("duplicate id", _set(1, "id", "studio-tiny"), "duplicate model id 'studio-tiny'"),
    ("bad default", lambda raw: raw.update(default_model="nope"), "default_model 'nope' is not one of the models"),
    ("no models", lambda raw: raw.update(models=[]), "field 'models'"),
    ("entry without id", _drop(0, "id"), "model '#1': field 'id'"),
    # evaluation models
    ("evaluation kind", _set_eval(0, "kind", "fad"), "evaluation model 'studio-tiny-clap': field 'kind'"),
    ("evaluation builtin unknown", _set_eval(0, "source", {"builtin": "studio-tiny"}),
     "unknown builtin 'studio-tiny'; known: ['studio-tiny-clap']"),
    ("generation builtin is not a CLAP", _set(0, "source", {"builtin": "studio-tiny-clap"}),
     "unknown builtin 'studio-tiny-clap'"),
    ("evaluation sample rate", _set_eval(1, "sample_rate", 0), "evaluation model 'tiny-clap-hub': field 'sample_rate'"),
    ("evaluation memory missing", _drop_eval(1, "memory_gb"), "field 'memory_gb': Field required"),
    ("evaluation id taken by a model", _set_eval(0, "id", "studio-tiny"), "duplicate model id 'studio-tiny'"),
    ("bad default evaluation model", lambda raw: raw.update(default_evaluation_model="studio-tiny"),
     "default_evaluation_model 'studio-tiny' is not one of the evaluation_models"),
]


@pytest.mark.parametrize("mutate,expected", [(m, e) for _, m, e in BROKEN], ids=[c for c, _, _ in BROKEN])
def test_broken_registry_is_refused_naming_entry_and_field(mutate, expected):
    with pytest.raises(RegistryError) as info:
        parse_registry(_broken(mutate))
    assert expected in info.value.message


@pytest.mark.parametrize("content,expected", [
    ("models: [unclosed", "is not valid YAML at line 1, column 18: expected ',' or ']', but got '<stream end>'."),
    ("- just\n- a list\n", "expected a mapping"),
    ("default_model: caf\xe9\n".encode("latin-1"), "is not UTF-8 text (byte 18): save it as UTF-8"),
    (b"\xff\xfe" + "default_model: x".encode("utf-16-le"), "is not UTF-8 text (byte 0)"),
    (2_000_000, "is 2 MB, too big for a model registry (at most 1000 KB): check that --registry names the right"),
    ("folder", "cannot read model registry"),
])
def test_unreadable_registry_file(tmp_path, content, expected):
    """A file that is not a registry is refused at once, in one line naming what is wrong."""
    path = tmp_path / "registry.yaml"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, int):  # a huge file is refused before it is read (a sparse file: no disk used)
        with open(path, "wb") as f:
            f.truncate(content)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert expected in info.value.message and "\n" not in info.value.message


def test_missing_registry_file(tmp_path):
    with pytest.raises(RegistryError, match="cannot read model registry"):
        load_registry(tmp_path / "absent.yaml")


def test_limits_are_data(tmp_path):
    """A deployment lowers a model's limit by editing the file."""
    raw = yaml.safe_load(REPO_REGISTRY.read_text())
    for entry in raw["models"]:
        if entry["id"] == "musicgen-small":
            entry["max_duration_s"] = 12
            entry.pop("window_stride_s")  # 18 s would not fit a 12 s window: the default stride (60 %) does
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_registry(path).get("musicgen-small")
    assert spec.max_duration_s == 12 and spec.max_tokens == 600


def test_app_refuses_to_start_on_an_invalid_registry(tmp_path, monkeypatch):
    import app

    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(_broken(_set(0, "max_duration_s", 0))))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # main() sets it when it is not set
    with pytest.raises(SystemExit) as info:
        app.main(["--registry", str(path), "--data-dir", str(tmp_path / "d")])
    assert str(info.value.code).startswith("Text2Song Studio cannot start: ")
    assert "model 'studio-tiny': field 'max_duration_s'" in str(info.value.code)
