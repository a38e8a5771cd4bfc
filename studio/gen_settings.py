"""Typed generation settings: one class per backend and model family, declaring every parameter with its type,
default, bounds or options and a description ("x-step": the step a form's slider uses). Their JSON Schema is what
the API publishes and the forms are built from; registry.yaml's `generation:` block gives each model's defaults."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

MAX_SEED = 2**32 - 1
RANDOM_SEED = -1  # a request's (or the page's) seed -1: a random seed, whatever the seed policy
DEFAULT_DURATION_S = 10.0
OUTPUT_FORMATS = ("wav", "flac", "mp3")  # all written by soundfile's bundled libsndfile


class MusicgenSettings(BaseModel):
    """Generation settings of a MusicGen model run by the transformers backend."""

    # strict: "250" is not a number and 1 is not a boolean; a misspelt key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              title="MusicGen generation settings")

    do_sample: bool = Field(True, title="Sampling", description=(
        "Pick each next slice of sound at random among the likely ones, for variety. Off: always the most likely "
        "one, which tends to repeat itself; Top-k, Top-p and Temperature then do nothing."))
    top_k: int = Field(250, ge=0, le=2048, title="Top-k", description=(
        "Choose each next slice of sound among only the k most likely ones (0: no limit). Lower: safer; higher: "
        "more varied."))
    top_p: float = Field(0.0, ge=0.0, le=1.0, title="Top-p", json_schema_extra={"x-step": 0.01}, description=(
        "Choose among the most likely next slices of sound until their chances add up to p (0: off; nucleus "
        "sampling). An alternative to Top-k."))
    temperature: float = Field(1.0, gt=0.0, le=5.0, title="Temperature", json_schema_extra={"x-step": 0.05},
                               description=(
        "Below 1: more predictable and repetitive; above 1: more surprising, and less steady."))
    guidance_scale: float = Field(3.0, ge=0.0, le=20.0, title="Guidance scale (CFG)",
                                  json_schema_extra={"x-step": 0.1}, description=(
        "How closely the music follows the prompt (classifier-free guidance; 1: off). Above about 5 it can sound "
        "harsh. Guidance makes each piece take about twice as long."))
    seed_policy: Literal["random", "fixed"] = Field("random", title="Seed policy", description=(
        "random: a new seed for every piece (shown with the result). fixed: always the seed below, so the same "
        "prompt and settings give the same audio. A seed typed on the Generate tab (or sent by a script) wins."))
    seed: int = Field(0, ge=0, le=MAX_SEED, title="Fixed seed", description=(
        "The seed used when the seed policy is 'fixed': the same seed, prompt and settings give the same audio."))
    default_duration_s: float = Field(DEFAULT_DURATION_S, ge=0.5, title="Default duration (s)",
                                      json_schema_extra={"x-step": 0.5}, description=(
        "Length of a piece when none is asked for: the Generate tab starts here. At most the model's max "
        "duration."))
    output_format: Literal[OUTPUT_FORMATS] = Field("wav", title="Output format", description=(
        "File format of the audio: wav (16-bit PCM, lossless), flac (lossless, about half the size) or mp3 "
        "(lossy, smallest)."))
    normalize_loudness: bool = Field(False, title="Loudness normalisation", description=(
        "Scale each result to the target loudness (ITU-R BS.1770, as streaming services do), so clips play at the "
        "same level. A limiter keeps the true peak under -1 dBTP; the result says when the target was not reached."))
    target_lufs: float = Field(-14.0, ge=-40.0, le=-6.0, title="Target loudness (LUFS)",
                               json_schema_extra={"x-step": 0.5}, description=(
        "Loudness aimed at when normalisation is on: -14 for streaming, -23 for broadcast."))


class MusicgenStereoSettings(MusicgenSettings):
    """MusicGen stereo models generate two channels; they can be mixed down to one."""

    model_config = ConfigDict(title="MusicGen stereo generation settings")

    downmix_to_mono: bool = Field(False, title="Mix down to mono", description=(
        "Average the two channels into one: half the file size, for playback on a single speaker."))


# (backend, family) -> settings class. A model's family comes from its registry entry (see family_of).
SETTINGS_CLASSES: dict[tuple[str, str], type[MusicgenSettings]] = {
    ("transformers", "musicgen"): MusicgenSettings,
    ("transformers", "musicgen-stereo"): MusicgenStereoSettings,
}


def family_of(channels: int) -> str:
    return "musicgen-stereo" if channels == 2 else "musicgen"


@lru_cache(maxsize=None)  # a pure function of immutable inputs: one class per distinct model shape
def settings_class(backend: str, channels: int, max_duration_s: float) -> type[MusicgenSettings]:
    """The settings class of a model: its family's class with the duration bound set to the model's limit."""
    base = SETTINGS_CLASSES[(backend, family_of(channels))]
    inherited = base.model_fields["default_duration_s"]
    return create_model(
        base.__name__, __base__=base, __module__=base.__module__, __doc__=base.__doc__,
        default_duration_s=(float, Field(min(DEFAULT_DURATION_S, max_duration_s), ge=0.5, le=max_duration_s,
                                         title=inherited.title, description=inherited.description,
                                         json_schema_extra=inherited.json_schema_extra)))


# pydantic error type -> a message for a person (others keep pydantic's own)
_MESSAGES = {
    "extra_forbidden": "unknown setting",
    "literal_error": "must be one of {expected}",
    "less_than_equal": "must be at most {le}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
    "string_type": "must be text",
    "missing": "is required",
}


def field_errors(exc: ValidationError) -> dict[str, str]:
    """{field: message} for a person, one per bad field ('(body)' for problems with the whole object)."""
    out: dict[str, str] = {}
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (err.get("ctx") or {}).items()}
        template = _MESSAGES.get(err["type"])
        msg = template.format(**ctx) if template else err["msg"]
        out.setdefault(field, msg)
    return out

