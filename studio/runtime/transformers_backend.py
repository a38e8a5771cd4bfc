"""The transformers backend: MusicGen (and MusicGen Melody) through MusicgenForConditionalGeneration."""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from transformers import AutoProcessor, AutoTokenizer

from studio.errors import Cancelled, Incompatible
from studio.registry import ModelSpec
from studio.runtime.adapters import (MAX_LOADED_ADAPTER_BYTES, MAX_LOADED_ADAPTERS, WEIGHTS_FILE, check_structure,
                                    inspect_adapter)
from studio.runtime.backend import DecodeHooks, Row, RowResult, SamplingParams, StepCallback
from studio.runtime.chroma import ChromaSettings
from studio.runtime.decode import BASE_ADAPTER, FastPath, decode_batch
from studio.runtime.fingerprint import weights_fingerprint
from studio.runtime.stacks import is_plain, lora_layers, row_stack, scaled, stacked


def _model_class(model_type: str):
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    classes = {"musicgen": MusicgenForConditionalGeneration, "musicgen_melody": MusicgenMelodyForConditionalGeneration}
    if model_type not in classes:
        raise Incompatible(f"The model folder holds a {model_type!r} model; the transformers backend runs "
                           f"{', '.join(classes)}.", code="unsupported_architecture")
    return classes[model_type]


class TransformersMusicgen:
    def __init__(self, spec: ModelSpec, model, processor, device: torch.device, weights_hash: str | None = None,
                 max_adapters: int = MAX_LOADED_ADAPTERS, max_adapter_bytes: int = MAX_LOADED_ADAPTER_BYTES,
                 fast_path: bool | None = None, chroma: ChromaSettings | None = None):
        self.chroma = chroma  # melody models: how their melody clips become chroma (None: text only)
        self.fast_path = fast_path  # the decode loop's GPU path (compile + CUDA graphs, half); None: on with CUDA
        self._fast: FastPath | None = None  # its compiled step and static buffers, made on first use
        self.spec, self.model, self.processor, self.device = spec, model, processor, device
        self.weights_hash = weights_hash
        self.max_adapters, self.max_adapter_bytes = max_adapters, max_adapter_bytes
        self._nbytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        decoder = model.config.decoder
        self.codebooks_per_channel = decoder.num_codebooks // max(1, getattr(decoder, "audio_channels", 1))
        # PEFT adapter name -> folder, loaded into the model, least recently used first (bounded: see _evict)
        self.adapters: OrderedDict[str, Path] = OrderedDict()
        self._adapter_bytes: dict[str, int] = {}
        self.active_adapter: str | None = None
        self._tuner_layers: list | None = None  # PEFT's adapter layers, found once per adapter load/unload

    # ---- LoRA adapters (PEFT through transformers' integration: the base is never reloaded) -------------
    def load_adapter(self, name: str, folder: Path, keep: Sequence[str] = ()) -> None:
        """Load a LoRA adapter next to the base weights after checking its structure against this model. keep:
        adapters the eviction must not unload to make room (the others of the stack being loaded)."""
        if name in self.adapters:
            self.adapters.move_to_end(name)
            return
        check_structure(self.model, inspect_adapter(folder), self.spec.display_name)
        try:
            with _quiet_peft():  # its load report and warnings repeat what check_structure already verified
                self.model.load_adapter(str(folder), adapter_name=name)
        except Exception:
            if name in getattr(self.model, "peft_config", {}):  # a failed load leaves the adapter half-in
                self.model.delete_adapter(name)
            raise
        self.adapters[name] = Path(folder)
        self._adapter_bytes[name] = (Path(folder) / WEIGHTS_FILE).stat().st_size
        self._tuner_layers = None
        self._evict(keep=name, also=keep)
        self._apply()

    def _evict(self, keep: str, also: Sequence[str] = ()) -> None:
        """Unload the least recently used adapters beyond the count and bytes caps (never `keep` nor the active
        one): every adapter kept makes each later load and each forward over the adapted layers slower."""
        def over() -> bool:
            return (len(self.adapters) > self.max_adapters
                    or sum(self._adapter_bytes.values()) > self.max_adapter_bytes)

        for name in list(self.adapters):
            if not over():
                return
            if name not in (keep, self.active_adapter, *also):
                self.unload_adapter(name)

    def activate_adapter(self, name: str | None, folder: Path | None = None) -> None:
        """Generate with adapter `name` (loading it from `folder` if needed), or with the base model (None)."""
        if name is not None:
            self.load_adapter(name, folder)  # loads on first use; otherwise marks it recently used
        self.active_adapter = name
        if name is not None:
            self._evict(keep=name)  # the previously active one may go now
        self._apply()

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            return
        self.model.delete_adapter(name)
        del self.adapters[name]
        self._adapter_bytes.pop(name, None)
        self._tuner_layers = None
        if self.active_adapter == name:
            self.active_adapter = None
        self._apply()

    def _apply(self) -> None:
        """What transformers' disable_adapters / enable_adapters + set_adapter do, on the adapter layers only:
        those walk every module of the model on each call, which made a switch cost ~20 ms on musicgen-small."""
        if not self.adapters:
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        name = self.active_adapter
        for layer in self._layers():
            if name is None:
                layer.enable_adapters(False)  # the base model's output, bit for bit
            else:
                layer.set_adapter(name, inference_mode=True)
                if isinstance(layer, BaseTunerLayer) and layer.disable_adapters:
                    layer.enable_adapters(True)

    def nbytes(self) -> int:
        """Bytes of the base weights, measured once at load: other threads ask (memory checks for the page)
        while a switch may be unloading this very object."""
        return self._nbytes

    def row_bytes(self, frames: int) -> int:
        """Memory one row of a decoding batch holds: its self-attention keys and values in every layer for all its
        steps (one window at a time: a long piece holds no more than a window), twice with guidance (the
        unconditional copy); what bounds a batch on a GPU."""
        d = self.model.config.decoder
        steps = min(frames, self.spec.max_tokens) + self.codebooks_per_channel - 1
        if self.chroma is not None:  # the conditioning prefix sits in the same cache (+ about 64 text tokens)
            steps += getattr(self.model.config, "chroma_length", 0) + 64
        elem = next(self.model.parameters()).element_size()
        return 2 * 2 * d.num_hidden_layers * d.hidden_size * steps * elem

    def tokens_for(self, duration_s: float) -> int:
        """Decoding steps for duration_s: the codebook delay pattern costs codebooks-1 extra steps."""
        return round(duration_s * self.spec.frame_rate) + self.codebooks_per_channel - 1

    def window_frames(self) -> tuple[int, int]:
        """(window, stride) in frames: the registry's window (max_duration_s) and the new frames each further
        window adds."""
        window = self.spec.max_tokens
        return window, max(1, min(round(self.spec.stride_s * self.spec.frame_rate), window - 1))

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float32 (samples, channels) at the model's rate -> int64 codes (codebooks, frames), as the decoder
        predicts them: EnCodec at the model's bandwidth; a stereo model's left and right encoded apart and
        interleaved (0 L, 1 R, ...), as transformers does for an audio prompt."""
        audio = np.asarray(audio, dtype=np.float32)
        channels = getattr(self.model.config.decoder, "audio_channels", 1)
        if audio.ndim != 2 or audio.shape[1] != channels or audio.shape[0] < 1:
            raise ValueError(f"audio must be (samples, {channels}), not {audio.shape}")
        encodec = self.model.audio_encoder
        dtype = next(encodec.parameters()).dtype
        with torch.inference_mode():
            parts = []
            for c in range(channels):
                x = torch.from_numpy(np.ascontiguousarray(audio[:, c]))[None, None].to(self.device, dtype)
                out = encodec.encode(x)  # its default bandwidth, as transformers encodes an audio prompt
                parts.append(out.audio_codes[0, 0])  # (codebooks per channel, frames)
            codes = torch.stack(parts, dim=1).reshape(-1, parts[0].shape[-1]) if channels > 1 else parts[0]
        frames = round(audio.shape[0] / self.spec.sample_rate * self.spec.frame_rate)
        return codes[:, :max(1, frames)].cpu().numpy().astype(np.int64)

    def generate_batch(self, rows: Sequence[Row], hooks: DecodeHooks | None = None,
                       stream_every_s: float | None = 1.0, window: int | None = None,
                       stride: int | None = None) -> list[RowResult | None]:
        """Decode `rows` in one batch with the studio's own loop (studio/runtime/decode.py); rows longer than one
        window (default: the registry's) are decoded window by window.

        Rows name adapters already loaded (load_adapter). One stack for all rows: one adapter at strength 1 (or
        none) takes the fast set-adapter path and stays the active one; another stack (strengths, several
        adapters: studio/runtime/stacks.py) is applied with PEFT's scaling for this decode and removed after.
        Different stacks: PEFT's mixed-batch forward, row by row, when each row has at most one adapter and each
        adapter one strength (the worker never batches other mixes: Incompatible `mixed_stacks`)."""
        row_stacks = [row_stack(r) for r in rows]
        names = {name for stack in row_stacks for name, _ in stack}
        missing = sorted(n for n in names if n not in self.adapters)
        if missing:
            raise Incompatible(f"Adapter(s) {', '.join(missing)} are not loaded in {self.spec.display_name}.",
                               code="adapter_not_loaded")
        mixed, stack, strengths = None, None, {}
        if len(set(row_stacks)) == 1:
            stack = row_stacks[0]
            if is_plain(stack):
                name = stack[0][0] if stack else None
                if name != self.active_adapter:
                    self.active_adapter = name
                    self._apply()
                stack = None
        else:
            for row in row_stacks:
                for name, strength in row:
                    if len(row) > 1 or strengths.setdefault(name, strength) != strength:
                        raise Incompatible("Rows with different adapter stacks cannot share a batch (each row at "
                                           "most one adapter, each adapter at one strength).", code="mixed_stacks")
            mixed = [row[0][0] if row else BASE_ADAPTER for row in row_stacks]
            strengths = {n: s for n, s in strengths.items() if s != 1.0}
        fast = None
        if self.fast_path or (self.fast_path is None and self.device.type == "cuda"):
            if self._fast is None:
                self._fast = FastPath(compile=self.device.type == "cuda")  # off CUDA: the same step, eager
            fast = self._fast
        default_window, default_stride = self.window_frames()
        layers = self._lora_layers() if stack is not None or strengths else []
        try:
            with (stacked(layers, stack) if stack is not None else scaled(layers, strengths)):
                return decode_batch(self.model, self.processor, rows, frame_rate=self.spec.frame_rate,
                                    sample_rate=self.spec.sample_rate, hooks=hooks, stream_every_s=stream_every_s,
                                    adapter_names=mixed, fast=fast, window=window or default_window,
                                    stride=stride or default_stride)
        finally:
            if mixed is not None or stack is not None:
                self._apply()  # the mixed pass or the stack changed the layers: back to the active adapter's state

    def _layers(self) -> list:
        """PEFT's adapter layers of the model, found once per adapter load/unload (walking every module of
        musicgen-small takes milliseconds)."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import ModulesToSaveWrapper

        if self._tuner_layers is None:
            self._tuner_layers = [m for m in self.model.modules()
                                  if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]
        return self._tuner_layers

    def _lora_layers(self) -> list:
        return lora_layers(self._layers())

    def generate(self, prompt: str, duration_s: float, params: SamplingParams, seed: int,
                 on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """One row through generate_batch, with the active adapter; audio exactly duration_s long."""
        row = Row(prompt=prompt, frames=round(duration_s * self.spec.frame_rate), seed=seed, params=params,
                  adapter=self.active_adapter)

        class Hooks(DecodeHooks):
            def on_step(self, done: int, total: int) -> None:
                if on_step is not None:
                    on_step(done, total)

            def stopped(self, row: int) -> bool:
                return bool(should_stop and should_stop())

        result = self.generate_batch([row], Hooks(), stream_every_s=None)[0]
        if result is None or (should_stop and should_stop()):
            raise Cancelled("Generation cancelled.")
        want = round(duration_s * self.spec.sample_rate)
        audio = result.audio
        if audio.shape[0] >= want:
            return np.ascontiguousarray(audio[:want])
        return np.pad(audio, ((0, want - audio.shape[0]), (0, 0)))


class TransformersBackend:
    def __init__(self, fast_path: bool | None = None):
        self.fast_path = fast_path  # None: the GPU fast path on CUDA devices, off elsewhere

    def load(self, folder: Path, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> TransformersMusicgen:
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise Incompatible(f"{folder} has no readable config.json: {exc}", code="invalid_model_folder") from None
        cls = _model_class(config.get("model_type", ""))
        melody = config.get("model_type") == "musicgen_melody"
        chroma = _melody_settings(folder, spec) if melody else None
        # use_safetensors: never unpickle weights, whatever else the folder holds.
        model = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True, local_files_only=True)
        model.to(device).eval()
        if melody:
            # MusicgenMelodyProcessor cannot be built without torchaudio (its feature extractor's spectrogram):
            # the text goes through the tokenizer alone, the melody through studio/runtime/chroma.py.
            processor = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        _check_matches_registry(model, spec)
        return TransformersMusicgen(spec, model, processor, device, weights_fingerprint(folder),
                                    fast_path=self.fast_path, chroma=chroma)

    def unload(self, model: TransformersMusicgen) -> None:
        # Drop the references this object holds; the manager drops the object and releases memory.
        model.model = None
        model.processor = None
        model._fast = None  # its static buffers


@contextmanager
def _quiet_peft() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            yield
    finally:
        hf_logging.set_verbosity(level)


def build_skeleton(folder: Path) -> torch.nn.Module:
    """The model's modules on the meta device: shapes without weights, to check adapters against a base that is
    not loaded (milliseconds, no memory)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return _model_class(config.model_type)(config)


def _melody_settings(folder: Path, spec: ModelSpec) -> ChromaSettings:
    """A melody model's chroma settings (its preprocessor_config.json). The studio computes a melody's chroma when
    the job is submitted, at the model's rate with MusicGen Melody's settings (studio/services/generation.py): a
    model whose extractor differs is refused here rather than fed chroma it was not trained on."""
    found = ChromaSettings.from_folder(folder)
    expected = ChromaSettings(sample_rate=spec.sample_rate)
    if found != expected:
        raise Incompatible(f"{spec.display_name}'s melody feature extractor ({found}) differs from MusicGen Melody's "
                           f"({expected}), which the studio computes.", code="unsupported_melody_features")
    return found


def _check_matches_registry(model, spec: ModelSpec) -> None:
    """The registry's capabilities drive limits and WAV headers: they must describe the weights we loaded."""
    audio = model.config.audio_encoder
    found = {
        "sample_rate": audio.sampling_rate,
        "channels": getattr(model.config.decoder, "audio_channels", 1),
        "frame_rate": audio.frame_rate,
        "codebooks": model.config.decoder.num_codebooks,
    }
    wrong = [f"{k}: registry says {getattr(spec, k)}, weights have {v}" for k, v in found.items()
             if float(getattr(spec, k)) != float(v)]
    if type(model).__name__ != spec.model_class:
        wrong.append(f"class: registry says {spec.model_class}, weights are {type(model).__name__}")
    if wrong:
        raise Incompatible(f"registry.yaml entry {spec.id!r} does not match its weights ({'; '.join(wrong)}).",
                           code="registry_mismatch")
