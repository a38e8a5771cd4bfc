"""The model registry: typed ModelSpec entries parsed and validated from registry.yaml."""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, SerializeAsAny, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from studio.errors import Conflict, NotFound, RegistryError
from studio.gen_settings import MusicgenSettings, field_errors, settings_class

BUILTIN_MODELS = {"studio-tiny", "studio-tiny-stereo", "studio-tiny-melody"}
# The transformers classes the studio runs, by config.json's model_type; melody conditioning needs the melody class
ARCHITECTURES = {"musicgen": "MusicgenForConditionalGeneration",
                 "musicgen_melody": "MusicgenMelodyForConditionalGeneration"}
MELODY_ARCHITECTURE = ARCHITECTURES["musicgen_melody"]
BUILTIN_EVALUATION_MODELS = {"studio-tiny-clap"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsProblems(ValueError):
    """Bad values in a model's `generation:` block, by setting name (reported one line per setting)."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


class ModelSource(_Strict):
    """Where the weights come from: a hub repo (optionally pinned), a model the studio builds itself, or a folder on
    this machine (a custom model added from an import root: used where it is, never copied)."""

    BUILTINS: ClassVar[set[str]] = BUILTIN_MODELS

    hub: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str | None = None
    builtin: str | None = None
    folder: str | None = Field(None, min_length=1, description="an absolute path (custom models from a folder)")

    @model_validator(mode="after")
    def _one_kind(self) -> "ModelSource":
        if sum(v is not None for v in (self.hub, self.builtin, self.folder)) != 1:
            raise ValueError("give exactly one of 'hub', 'builtin' or 'folder'")
        if self.builtin is not None and self.builtin not in self.BUILTINS:
            raise ValueError(f"unknown builtin {self.builtin!r}; known: {sorted(self.BUILTINS)}")
        if self.hub is None and self.revision is not None:
            raise ValueError("'revision' only applies to hub sources")
        if self.folder is not None and not Path(self.folder).is_absolute():
            raise ValueError("'folder' must be an absolute path")
        return self


class _Listed(_Strict):
    """What every model in the registry has, generating or scoring: its id, and how a person sees it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    display_name: str = Field(min_length=1, max_length=80)
    description: str = ""


class ModelSpec(_Listed):
    backend: Literal["transformers"]
    architecture: Literal["MusicgenForConditionalGeneration", "MusicgenMelodyForConditionalGeneration"] | None = Field(
        None, description=("the transformers class of the checkpoint (config.json's architectures); none: the one "
                           "its conditioning needs (the melody class for text + melody)"))
    source: ModelSource
    parameters: int = Field(gt=0, description="parameter count")
    sample_rate: int = Field(gt=0)
    channels: Literal[1, 2]
    frame_rate: float = Field(gt=0, description="audio frames (decoding steps) per second")
    max_duration_s: float = Field(gt=0, le=600)
    memory_gb: float = Field(gt=0, description="memory needed to load and generate in float32")
    download_gb: float = Field(0.0, ge=0)
    codebooks: int = Field(4, ge=1, le=16, description=(
        "EnCodec codebooks the decoder predicts per frame (4 for mono models; 8 for stereo: left and right "
        "interleaved)"))
    conditioning: tuple[Literal["text", "melody"], ...] = Field(("text",), min_length=1, description=(
        "what a generation can be conditioned on: text, and a melody clip's chromagram for MusicGen Melody models"))
    max_extended_duration_s: float | None = Field(None, gt=0, le=3600, description=(
        "longest piece generated window by window (each window continues the end of the previous one); none: no "
        "longer than one window (max_duration_s)"))
    window_stride_s: float | None = Field(None, gt=0, description=(
        "new seconds each further window adds (the rest of the window is the end of the previous one, as context); "
        "none: 18 s or 60 % of the window, whichever is shorter"))
    max_batch: int = Field(4, ge=1, le=8, description=(
        "jobs decoded together at most (fewer when free memory is short); 8 at most: the adapters of one batch "
        "must all stay loaded"))
    # The model's default generation settings: its family's settings class (studio/gen_settings.py), so a value
    # that a user could not save is refused here too. These seed the settings stored in the database.
    generation: SerializeAsAny[MusicgenSettings] = Field(default_factory=dict, validate_default=True)

    @field_validator("generation", mode="before")
    @classmethod
    def _typed_generation(cls, raw: object, info: ValidationInfo) -> object:
        if isinstance(raw, MusicgenSettings):
            return raw
        shape = [info.data.get(k) for k in ("backend", "channels", "max_duration_s")]
        if None in shape:
            return MusicgenSettings()  # the entry has other errors, reported on their own fields
        if not isinstance(raw, dict):
            raise ValueError("expected a mapping of generation settings")
        try:
            return settings_class(*shape).model_validate(raw)
        except ValidationError as exc:
            raise SettingsProblems(field_errors(exc)) from None

    @model_validator(mode="after")
    def _windows(self) -> "ModelSpec":
        if self.max_extended_duration_s is not None and self.max_extended_duration_s < self.max_duration_s:
            raise ValueError(f"max_extended_duration_s ({self.max_extended_duration_s:g}) is shorter than "
                             f"max_duration_s ({self.max_duration_s:g})")
        if self.window_stride_s is not None and self.window_stride_s >= self.max_duration_s:
            raise ValueError(f"window_stride_s ({self.window_stride_s:g}) must be shorter than max_duration_s "
                             f"({self.max_duration_s:g}): each window keeps some of the previous one as context")
        if self.channels == 2 and self.codebooks % 2:
            raise ValueError(f"a stereo model has an even number of codebooks (left and right), not {self.codebooks}")
        if self.architecture is not None and ("melody" in self.conditioning) != (
                self.architecture == MELODY_ARCHITECTURE):
            raise ValueError(f"conditioning {list(self.conditioning)} does not fit {self.architecture}: melody "
                             f"conditioning is what {MELODY_ARCHITECTURE} (and only it) adds")
        return self

    @property
    def model_class(self) -> str:
        """The transformers class the weights load with (declared, or the one the conditioning needs)."""
        if self.architecture is not None:
            return self.architecture
        return MELODY_ARCHITECTURE if "melody" in self.conditioning else ARCHITECTURES["musicgen"]

    @property
    def extended_limit_s(self) -> float:
        """The longest request this model takes: one window, or several when it may be extended."""
        return self.max_extended_duration_s or self.max_duration_s

    @property
    def stride_s(self) -> float:
        """New seconds per window after the first."""
        return self.window_stride_s or min(18.0, 0.6 * self.max_duration_s)

    @property
    def settings_class(self) -> type[MusicgenSettings]:
        return settings_class(self.backend, self.channels, self.max_duration_s)

    @property
    def max_tokens(self) -> int:
        return math.ceil(self.max_duration_s * self.frame_rate)

    @property
    def is_builtin(self) -> bool:
        return self.source.builtin is not None


class EvaluationModelSource(ModelSource):
    """Where an evaluation model's weights come from: a hub repo, or one the studio builds (studio-tiny-clap)."""

    BUILTINS: ClassVar[set[str]] = BUILTIN_EVALUATION_MODELS


class EvaluationModelSpec(_Listed):
    """A model that scores generated audio (not one that generates): a CLAP scores text-audio agreement as the
    cosine of its text and audio embeddings. Downloaded, cached and loaded like a generation model."""

    kind: Literal["clap"]
    source: EvaluationModelSource
    parameters: int = Field(gt=0, description="parameter count")
    sample_rate: int = Field(gt=0, description="the audio rate the model takes (clips are resampled to it)")
    memory_gb: float = Field(gt=0, description="memory needed to load and score in float32")
    download_gb: float = Field(0.0, ge=0)

    @property
    def is_builtin(self) -> bool:
        return self.source.builtin is not None


class Registry(_Strict):
    """registry.yaml's models, and the custom models added while the studio runs (the one owner of both).

    The YAML entries are fixed at start-up; custom models (stored in the database by studio/services/custom_models.py)
    come and go through add_custom / remove_custom, under a lock. `models` is replaced, never changed in place
    (copy on write): a caller iterating it, or holding a spec from get(), keeps a consistent view."""

    default_model: str
    models: list[ModelSpec] = Field(min_length=1)
    # Models that score audio (the automatic score); the default is used when it is on this machine (--eval-model
    # chooses another)
    default_evaluation_model: str | None = None
    evaluation_models: list[EvaluationModelSpec] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _custom: frozenset[str] = PrivateAttr(default_factory=frozenset)

    # ---- custom models ------------------------------------------------------------------------------------
    def add_custom(self, spec: ModelSpec) -> None:
        """Make `spec` a model of this registry (Conflict 'model_exists' when its id is taken)."""
        with self._lock:
            if spec.id in {m.id for m in [*self.models, *self.evaluation_models]}:
                raise Conflict(f"A model with id {spec.id!r} already exists: choose another id.",
                               code="model_exists", model_id=spec.id)
            object.__setattr__(self, "models", [*self.models, spec])  # frozen for callers; replaced whole
            self._custom = self._custom | {spec.id}

    def remove_custom(self, model_id: str) -> ModelSpec:
        """Take custom model `model_id` out (NotFound if unknown; Conflict 'not_custom' for registry.yaml's)."""
        with self._lock:
            spec = self.get(model_id)
            if model_id not in self._custom:
                raise Conflict(f"{spec.display_name} is one of registry.yaml's models: only models added in the "
                               "studio can be removed (edit registry.yaml for the others).", code="not_custom",
                               model_id=model_id)
            object.__setattr__(self, "models", [m for m in self.models if m.id != model_id])
            self._custom = self._custom - {model_id}
            return spec

    def is_custom(self, model_id: str) -> bool:
        return model_id in self._custom

    @model_validator(mode="after")
    def _consistent(self) -> "Registry":
        seen: set[str] = set()
        for spec in [*self.models, *self.evaluation_models]:
            if spec.id in seen:
                raise ValueError(f"duplicate model id {spec.id!r}")
            seen.add(spec.id)
        if self.default_model not in {m.id for m in self.models}:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models")
        if self.default_evaluation_model is not None and \
                self.default_evaluation_model not in {m.id for m in self.evaluation_models}:
            raise ValueError(f"default_evaluation_model {self.default_evaluation_model!r} is not one of the "
                             "evaluation_models")
        return self

    def evaluation_model(self, model_id: str) -> EvaluationModelSpec:
        for spec in self.evaluation_models:
            if spec.id == model_id:
                return spec
        known = ", ".join(s.id for s in self.evaluation_models) or "none"
        raise NotFound(f"Unknown evaluation model {model_id!r}. Known evaluation models: {known}.",
                       code="evaluation_model_not_found", model_id=model_id)

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        raise NotFound(f"Unknown model {model_id!r}. Known models: {', '.join(self.ids())}.",
                       code="model_not_found", model_id=model_id)

    def ids(self) -> list[str]:
        return [spec.id for spec in self.models]


def _location(raw: dict, loc: tuple) -> str:
    """Turn a pydantic error location into 'model 'x': field 'a.b'' using the entry's id when it has one."""
    if len(loc) >= 2 and loc[0] in ("models", "evaluation_models") and isinstance(loc[1], int):
        entries = raw.get(loc[0]) or []
        entry = entries[loc[1]] if loc[1] < len(entries) else None
        name = entry.get("id") if isinstance(entry, dict) and entry.get("id") else f"#{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:]) or "(entry)"
        what = "model" if loc[0] == "models" else "evaluation model"
        return f"{what} {name!r}: field {field!r}"
    return f"field {'.'.join(str(p) for p in loc) or '(top level)'!r}"


def parse_registry(raw: object, source: str = "registry.yaml") -> Registry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: expected a mapping with 'default_model' and 'models'")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, SettingsProblems):
                problems += [f"{_location(raw, (*err['loc'], k))}: {v}" for k, v in cause.problems.items()]
                continue
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_location(raw, tuple(err['loc']))}: {msg}")
        raise RegistryError(f"{source} is invalid:\n  " + "\n  ".join(problems), problems=problems) from None


MAX_REGISTRY_BYTES = 1_000_000  # a registry of hundreds of models is tens of KB; more is the wrong file


def load_registry(path: Path) -> Registry:
    """registry.yaml, validated; a file that is not one (too big, not UTF-8, not YAML) is refused in one line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REGISTRY_BYTES:
            raise RegistryError(f"{path} is {size / 1e6:.0f} MB, too big for a model registry (at most "
                                f"{MAX_REGISTRY_BYTES // 1000} KB): check that --registry names the right file.")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8, or check that "
                            "--registry names the right file.") from None
    except OSError as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RegistryError(f"{path} is not valid YAML{where}: {problem}.") from None
    return parse_registry(raw, str(path))
