"""The training loop of one run (sft or dpo), in the training subprocess: everything the run folder protocol
(studio/training/layout.py) promises, testable in-process.

Exactness across stop/resume: nothing random is drawn from a running generator. The clips of a step, their crops,
the text dropout and the dropout masks all come from generators seeded by (config.seed, step, micro-batch), the
learning rate is a function of the step, and a checkpoint holds the adapter and the optimiser's moments: a run
resumed from step S computes the same losses as one that never stopped (to float tolerance).

Checkpoints are written into a temp folder beside their place and renamed (a kill leaves no half checkpoint: the
temp folder is removed at the next start); an existing checkpoint folder is never written again. The optimiser state
is a safetensors file plus JSON metadata: nothing is ever pickled or unpickled.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import traceback
import warnings
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from studio.training import layout
from studio.training.config import TARGET_PRESETS, TrainingConfig, total_steps
from studio.training.data import (Stopped, TextStates, TrainingError, crop, delay_labels, derive_seed, encode_clips,
                                  generator, read_codes, sample_items, text_states)
from studio.training.layout import (CheckpointEvent, CheckpointState, DoneEvent, ResumedEvent, RunSpec, StageEvent,
                                    StepEvent)

TMP_CHECKPOINT_PREFIX = ".tmp-"
ETA_WINDOW = 20  # steps the ETA's speed is measured over
ADAPTER_NAME = "default"


def lr_at(config: TrainingConfig, step: int, total: int) -> float:
    """The learning rate of optimiser step `step` (1-based): linear warm-up to the configured rate (never 0), then
    constant, linear or cosine decay towards 0 (the last step still moves)."""
    base = config.learning_rate
    warmup = min(config.warmup_steps, total)
    if step <= warmup:
        return base * step / warmup
    if config.lr_scheduler == "constant":
        return base
    progress = (step - 1 - warmup) / max(1, total - warmup)
    if config.lr_scheduler == "linear":
        return base * (1.0 - progress)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_precision(config: TrainingConfig, device: torch.device) -> torch.dtype:
    """auto: fp32 on a CPU (bf16 is slower there), bf16 on a GPU that has it, else fp16 (with loss scaling)."""
    wanted = config.precision
    if wanted == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def rewrite_events_until(path: Path, step: int) -> None:
    """Keep the events of the run up to step `step` (what a resume from that checkpoint continues), drop the rest and
    every done event, and replace the file in one step (a reader sees the old file or the new one)."""
    events, _ = layout.read_events(path)
    kept, cut = [], False
    for event in events:
        if event.kind == "done":
            continue
        if event.kind in ("step", "checkpoint", "resumed"):
            if event.step > step:
                cut = True
                continue
        elif cut:  # a stage of the part of the run that is dropped
            continue
        kept.append(event)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(e.model_dump_json() + "\n" for e in kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Trainer:
    """One start of a run: Trainer(folder, spec).run() -> the DoneEvent it ended with (also appended to
    events.jsonl). stop_requested: an extra stop signal (SIGTERM) besides the stop file."""

    def __init__(self, folder: Path, spec: RunSpec, *, stop_requested: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.spec = spec
        self.config = spec.config
        self.events_path = self.folder / layout.EVENTS_FILE
        self.stop_path = self.folder / layout.STOP_FILE
        self.checkpoints = self.folder / layout.CHECKPOINTS_DIR
        self._extra_stop = stop_requested or (lambda: False)
        self._log = log or (lambda message: None)
        self.device = torch.device(spec.device)
        self.step = 0
        self.total = 0
        self.elapsed_before = 0.0  # training seconds of earlier starts (from the resumed checkpoint)
        self.losses_since_checkpoint: list[float] = []
        self.last_loss: float | None = None
        self.model = None  # the PeftModel
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler = None
        self.items: list = []  # sft: codes per clip; dpo: (chosen codes, rejected codes) per pair
        self.captions: list[str] = []
        self.text: TextStates | None = None
        self.ref: tuple[torch.Tensor, torch.Tensor] | None = None  # dpo reference log-probs (chosen, rejected)
        self.weights: torch.Tensor | None = None  # dpo: each pair's decisive votes
        self.dtype = torch.float32
        self.num_codebooks, self.pad, self.channels = 0, 0, 1  # the base model's, once loaded

    # ---- plumbing -----------------------------------------------------------------------------------------------
    def emit(self, event) -> None:
        layout.append_event(self.events_path, event)

    def stage(self, stage: str, message: str, fraction: float | None = None) -> None:
        self.emit(StageEvent(stage=stage, message=message, fraction=fraction, time=time.time()))

    def stop_requested(self) -> bool:
        return self.stop_path.exists() or self._extra_stop()

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self) -> DoneEvent:
        # the global RNG is seeded per step for dropout: keep the caller's (tests run this in-process)
        on_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        with torch.random.fork_rng(devices=[self.device] if on_cuda else []):
            try:
                done = self._run()
            except Stopped:
                done = DoneEvent(status="stopped", step=self.step, time=time.time(),
                                 message="Stopped before training began: nothing to save.")
            except TrainingError as exc:
                done = self._failed(exc.code, str(exc))
            except (torch.OutOfMemoryError, MemoryError):
                done = self._failed("out_of_memory", (
                    f"Out of memory on {self.spec.device}. Try a smaller batch size or clip length, or stop what "
                    "else uses the device."))
            except Exception as exc:  # noqa: BLE001 - the run must end with a done event whatever went wrong
                if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                    done = self._failed("out_of_memory", f"Out of memory on {self.spec.device}: {exc}")
                else:
                    self._log(traceback.format_exc())
                    done = self._failed("training_failed", f"Training failed: {type(exc).__name__}: {exc}")
        self.emit(done)
        return done

    def _failed(self, code: str, message: str) -> DoneEvent:
        self._log(f"failed ({code}): {message}")
        return DoneEvent(status="failed", step=self.step, code=code, message=message, time=time.time())

    def _run(self) -> DoneEvent:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError(f"The run asks for {self.spec.device}, which this machine does not have.",
                                code="device_unavailable")
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for child in self.checkpoints.iterdir():  # a checkpoint being written when the process was killed
            if child.name.startswith(TMP_CHECKPOINT_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        for child in self.folder.glob(f".{layout.EVENTS_FILE}.*.tmp"):  # an events rewrite killed midway
            child.unlink(missing_ok=True)
        resume = self.spec.resume_from
        if resume is not None:
            self._check_resumable(resume)
            rewrite_events_until(self.events_path, resume)
            self.step = resume
            self.emit(ResumedEvent(step=resume, time=time.time()))

        self.stage("loading", f"Loading {self.spec.model_id}")
        model, tokenizer = self._load_base()
        self._prepare_data(model, tokenizer)
        self.total = total_steps(self.config, len(self.items))
        self.model = self._with_lora(model, resume)
        trainable = self._trainable()
        self.optimizer = torch.optim.AdamW([p for _, p in trainable], lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay)
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type)
        if resume is not None:
            self._load_trainer_state(resume)
        elif self.spec.method == "dpo":
            self.ref = self._reference_logprobs()
        return self._train()

    def _check_resumable(self, step: int) -> None:
        folder = layout.checkpoint_folder(self.folder, step)
        if not (folder / layout.TRAINER_STATE_FILE).is_file() or not (folder / layout.STATE_FILE).is_file():
            raise TrainingError(f"Checkpoint {step} has no optimiser state to resume from (only the newest "
                                f"{self.config.keep_last} checkpoints keep it).", code="not_resumable")

    # ---- loading ------------------------------------------------------------------------------------------------
    def _load_base(self):
        from transformers import AutoConfig, AutoTokenizer, MusicgenForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from studio.runtime.hf_logging import quiet_musicgen_token_layout

        quiet_musicgen_token_layout()
        hf_logging.disable_progress_bar()
        folder = Path(self.spec.model_folder)
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TrainingError(f"The base model folder {folder} could not be read: {exc}",
                                code="model_unreadable") from None
        if config.model_type != "musicgen":
            raise TrainingError(f"Training supports MusicGen models; {self.spec.model_id} is a {config.model_type!r} "
                                "model.", code="unsupported_model")
        self.dtype = resolve_precision(self.config, self.device)
        # the frozen base in the compute precision; PEFT keeps the LoRA matrices in fp32 (autocast_adapter_dtype)
        model = MusicgenForConditionalGeneration.from_pretrained(
            folder, dtype=self.dtype, use_safetensors=True, local_files_only=True)
        if model.config.decoder.decoder_start_token_id is None:  # missing in transformers 5.23's configs
            model.config.decoder.decoder_start_token_id = model.config.decoder.pad_token_id
        model.to(self.device)
        model.requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.num_codebooks = model.config.decoder.num_codebooks
        self.pad = model.config.decoder.pad_token_id
        self.channels = getattr(model.config.decoder, "audio_channels", 1)
        return model, tokenizer

    def _prepare_data(self, model, tokenizer) -> None:
        spec = self.spec
        if spec.method == "sft":
            if not spec.clips:
                raise TrainingError("The dataset has no clips to train on.", code="no_clips")
            self.stage("encoding", f"Encoding {len(spec.clips)} clips", 0.0)
            model.audio_encoder.eval()

            def progress(done: int, total: int, encoded: int) -> None:
                if done == total or done % 10 == 0:
                    self.stage("encoding", f"Encoded {done} of {total} clips ({done - encoded} from the cache)",
                               done / total)

            self.items = encode_clips(model, spec.clips, Path(spec.codes_cache), spec.sample_rate, self.channels,
                                      self.num_codebooks, progress, self.stop_requested)
            self.captions = [c.caption for c in spec.clips]
        else:
            if not spec.pairs:
                raise TrainingError("There are no preference pairs to train on.", code="no_pairs")
            self.stage("encoding", f"Reading {len(spec.pairs)} preference pairs", 0.0)
            self.items = [(read_codes(p.chosen, self.num_codebooks), read_codes(p.rejected, self.num_codebooks))
                          for p in spec.pairs]
            self.captions = [p.prompt for p in spec.pairs]
            self.weights = torch.tensor([float(p.votes) for p in spec.pairs])
        if self.stop_requested():
            raise Stopped()
        self.text = text_states(model, tokenizer, self.captions, self.device)

    def _with_lora(self, model, resume: int | None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calling deprecated transformers API
            return self._make_lora(model, resume)

    def _make_lora(self, model, resume: int | None):
        from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        if self.spec.start_adapter:
            # continue the given adapter (its own rank and targets), trainable
            peft_model = PeftModel.from_pretrained(model, self.spec.start_adapter, adapter_name=ADAPTER_NAME,
                                                   is_trainable=True)
        else:
            lora = LoraConfig(r=self.config.r, lora_alpha=self.config.lora_alpha,
                              lora_dropout=self.config.lora_dropout,
                              target_modules=TARGET_PRESETS[self.config.target_modules])
            torch.manual_seed(derive_seed(self.config.seed, "init"))  # LoRA A's initialisation
            peft_model = get_peft_model(model, lora, adapter_name=ADAPTER_NAME)
        if resume is not None:
            folder = layout.checkpoint_folder(self.folder, resume)
            weights = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
            result = set_peft_model_state_dict(peft_model, weights, adapter_name=ADAPTER_NAME)
            if getattr(result, "unexpected_keys", None):
                raise TrainingError(f"Checkpoint {resume} does not fit this run's adapter.", code="bad_checkpoint")
        for _, p in self._named_trainable(peft_model):
            p.data = p.data.float()  # LoRA matrices always in fp32 (the base may be bf16/fp16)
        return peft_model

    def _name_base(self, path: Path) -> None:
        """The adapter names its base by the studio's model id (what the registry matches on import), not by the
        folder it was loaded from on this machine."""
        config = json.loads(path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = self.spec.model_id
        config.pop("revision", None)
        path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

    @staticmethod
    def _named_trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
        return sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda x: x[0])

    def _trainable(self):
        trainable = self._named_trainable(self.model)
        if not trainable:
            raise TrainingError("No layer of the model matches the target modules preset "
                                f"{self.config.target_modules!r}.", code="no_target_modules")
        return trainable

    # ---- forward passes -----------------------------------------------------------------------------------------
    def frames(self) -> int:
        seconds = min(self.config.clip_duration_s, self.spec.max_clip_s)
        return max(1, round(seconds * self.spec.frame_rate))

    def sft_batch(self, step: int, micro: int):
        """The inputs of micro-batch `micro` of step `step`: clips, random crops and text dropout, all drawn from
        generators seeded by (seed, step, micro)."""
        cfg = self.config
        idx = sample_items(cfg.seed, len(self.items), step, micro, cfg.batch_size, cfg.gradient_accumulation_steps)
        g = generator(cfg.seed, "batch", step, micro)
        codes = [crop(self.items[i], self.frames(), g) for i in idx]
        keep = torch.rand(len(idx), generator=g) >= cfg.cfg_dropout
        states, mask = self.text.batch([self.captions[i] for i in idx], keep, self.dtype)
        labels = delay_labels(codes, self.pad).to(self.device)
        return states, mask, labels

    def forward_loss(self, states, mask, labels) -> torch.Tensor:
        with self.autocast():
            out = self.model(encoder_outputs=(states,), attention_mask=mask, labels=labels)
        return out.loss.float()

    def sequence_logprobs(self, states, mask, labels) -> torch.Tensor:
        """Sum of log p(code) over every codebook and frame of each row (pad positions left out)."""
        with self.autocast():
            out = self.model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=self._inputs(labels))
        b, length, k = labels.shape
        logits = out.logits.float().reshape(b, k, length, -1)
        target = labels.permute(0, 2, 1)  # (B, K, L)
        valid = target != self.pad
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(max=logits.shape[-1] - 1)[..., None])
        return (logp[..., 0] * valid).sum(dim=(1, 2))

    def _inputs(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for labels: shifted right with the start token, (B * K, L) as MusicGen's decoder takes."""
        start = self.model.config.decoder.decoder_start_token_id
        inputs = torch.full_like(labels, self.pad)
        inputs[:, 1:] = labels[:, :-1]
        inputs[:, 0] = start
        b, length, k = labels.shape
        return inputs.permute(0, 2, 1).reshape(b * k, length)

    def pair_batch(self, idx: list[int]):
        """Chosen rows then rejected rows of the given pairs (their first clip_duration_s), with their prompts."""
        frames = self.frames()
        chosen = [crop(self.items[i][0], frames, None) for i in idx]
        rejected = [crop(self.items[i][1], frames, None) for i in idx]
        captions = [self.captions[i] for i in idx] * 2
        states, mask = self.text.batch(captions, torch.ones(len(captions), dtype=torch.bool), self.dtype)
        labels = delay_labels(chosen + rejected, self.pad).to(self.device)
        return states, mask, labels

    def pair_logprobs(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self.sequence_logprobs(*self.pair_batch(idx))
        return logp[:len(idx)], logp[len(idx):]

    @torch.no_grad()
    def _reference_logprobs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's log-probs of every pair, once (the reference never changes): 'start' with the adapter
        the run starts from, 'base' with the adapter disabled. Eval mode: no dropout."""
        self.model.eval()
        chosen, rejected = [], []
        ctx = self.model.disable_adapter() if self.config.dpo_reference == "base" else nullcontext()
        with ctx:
            n, b = len(self.items), self.config.batch_size
            for start in range(0, n, b):
                c, r = self.pair_logprobs(list(range(start, min(n, start + b))))
                chosen.append(c.cpu())
                rejected.append(r.cpu())
        return torch.cat(chosen), torch.cat(rejected)

    def dpo_loss(self, step: int, micro: int) -> tuple[torch.Tensor, float]:
        cfg = self.config
        idx = sample_items(cfg.seed, len(self.items), step, micro, cfg.batch_size, cfg.gradient_accumulation_steps)
        pc, pr = self.pair_logprobs(idx)
        rc, rr = (t[idx].to(self.device) for t in self.ref)
        margin = (pc - rc) - (pr - rr)
        w = self.weights[idx].to(self.device)
        loss = (-torch.nn.functional.logsigmoid(cfg.dpo_beta * margin) * w).sum() / w.sum()
        return loss, float((margin > 0).float().mean())

    # ---- the loop -----------------------------------------------------------------------------------------------
    def _train(self) -> DoneEvent:
        cfg = self.config
        params = [p for _, p in self._trainable()]
        self.stage("training", f"Training {self.total} steps" + (f" from step {self.step}" if self.step else ""))
        # sft: dropout as configured (the decoder's own and LoRA's). dpo: none at all (as trl's DPOTrainer does by
        # default): the reference's log-probs are computed without dropout, and any in the policy would add noise
        # to every margin (the first step would not even start at log 2).
        self.model.train(self.spec.method == "sft")
        started = time.monotonic()
        durations: deque[float] = deque(maxlen=ETA_WINDOW)
        accumulation = cfg.gradient_accumulation_steps
        while self.step < self.total:
            if self.stop_requested():
                return self._stop(started)
            t0 = time.monotonic()
            step = self.step + 1
            lr = lr_at(cfg, step, self.total)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses, accuracies = [], []
            for micro in range(accumulation):
                if micro and self.stop_requested():
                    # a step of several batches on a big model takes long: drop its partial gradients and save
                    # the last whole step (the resumed run recomputes this one exactly)
                    self.optimizer.zero_grad(set_to_none=True)
                    return self._stop(started)
                torch.manual_seed(derive_seed(cfg.seed, "dropout", step, micro))  # dropout masks of this batch
                if self.spec.method == "sft":
                    loss = self.forward_loss(*self.sft_batch(step, micro))
                else:
                    loss, accuracy = self.dpo_loss(step, micro)
                    accuracies.append(accuracy)
                if not torch.isfinite(loss):
                    raise TrainingError(f"The loss became {float(loss)} at step {step}: lower the learning rate "
                                        "(or use fp32).", code="loss_not_finite")
                scaled = loss / accumulation
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                losses.append(float(loss.detach()))
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step = step
            loss_value = sum(losses) / len(losses)
            self.last_loss = loss_value
            self.losses_since_checkpoint.append(loss_value)
            durations.append(time.monotonic() - t0)
            eta = (self.total - step) * sum(durations) / len(durations)
            items = len(self.items)
            self.emit(StepEvent(step=step, total_steps=self.total, loss=loss_value, lr=lr,
                                epoch=step * cfg.batch_size * accumulation / items,
                                elapsed_s=self.elapsed(started), eta_s=eta, time=time.time(),
                                accuracy=sum(accuracies) / len(accuracies) if accuracies else None))
            if step % cfg.checkpoint_every == 0 or step == self.total:
                self.save_checkpoint(started)
        return DoneEvent(status="succeeded", step=self.step, time=time.time(), message=(
            f"Trained {self.total} steps; last loss {self.last_loss:.4f}." if self.last_loss is not None
            else f"Trained {self.total} steps."))

    def elapsed(self, started: float) -> float:
        return self.elapsed_before + time.monotonic() - started

    def _stop(self, started: float) -> DoneEvent:
        if self.step > 0:
            self.save_checkpoint(started)
            message = f"Stopped at step {self.step} of {self.total}; checkpoint saved, resumable."
        else:
            message = "Stopped before the first step: nothing to save."
        return DoneEvent(status="stopped", step=self.step, time=time.time(), message=message)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self, started: float) -> None:
        """The adapter, the optimiser state and state.json, in a temp folder renamed into place. A checkpoint that
        exists already (a resume from it, stopped at once) is left as it is: checkpoints are never overwritten."""
        step = self.step
        final = layout.checkpoint_folder(self.folder, step)
        if final.exists():
            return
        self.stage("saving", f"Saving checkpoint {step}")
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_CHECKPOINT_PREFIX}{final.name}-", dir=self.checkpoints))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PEFT's deprecation notes about transformers' API, per save
                # save_embedding_layers=False: "auto" looks the base name up on the hub (no network here)
                self.model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # PEFT's model card template: nothing of ours in it
            self._name_base(tmp / "adapter_config.json")
            self._save_trainer_state(tmp / layout.TRAINER_STATE_FILE)
            since = self.losses_since_checkpoint
            loss = sum(since) / len(since) if since else self.last_loss
            state = CheckpointState(step=step, total_steps=self.total, loss=loss, time=time.time(),
                                    epoch=step * self.config.batch_size * self.config.gradient_accumulation_steps
                                    / max(1, len(self.items)), elapsed_s=self.elapsed(started))
            (tmp / layout.STATE_FILE).write_text(state.model_dump_json(indent=2), encoding="utf-8")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.losses_since_checkpoint = []
        self.emit(CheckpointEvent(step=step, folder=final.name, loss=loss, time=time.time()))
        self._prune_trainer_states()

    def _prune_trainer_states(self) -> None:
        """Only the newest keep_last checkpoints keep their optimiser state (to resume from); the adapters stay."""
        steps = [s for s in layout.checkpoint_steps(self.folder)
                 if (layout.checkpoint_folder(self.folder, s) / layout.TRAINER_STATE_FILE).is_file()]
        for s in steps[:-self.config.keep_last]:
            (layout.checkpoint_folder(self.folder, s) / layout.TRAINER_STATE_FILE).unlink(missing_ok=True)

    def _save_trainer_state(self, path: Path) -> None:
        from safetensors.torch import save_file

        names = [n for n, _ in self._trainable()]
        opt = self.optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        for index, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        if self.ref is not None:
            tensors["dpo.reference_chosen"], tensors["dpo.reference_rejected"] = self.ref
        meta = {"step": self.step, "total_steps": self.total, "params": names,
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]],
                "scaler": self.scaler.state_dict() if self.scaler else None}
        save_file(tensors, str(path), metadata={"trainer": json.dumps(meta)})

    def _load_trainer_state(self, step: int) -> None:
        from safetensors import safe_open

        folder = layout.checkpoint_folder(self.folder, step)
        path = folder / layout.TRAINER_STATE_FILE
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads(f.metadata()["trainer"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        names = [n for n, _ in self._trainable()]
        if meta["params"] != names:
            raise TrainingError(f"Checkpoint {step}'s optimiser state is for other LoRA layers than this run's.",
                                code="bad_checkpoint")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        groups = [{**g, "params": list(range(len(names)))} for g in meta["param_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        if self.scaler and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        if "dpo.reference_chosen" in tensors:
            self.ref = (tensors["dpo.reference_chosen"], tensors["dpo.reference_rejected"])
        elif self.spec.method == "dpo":
            raise TrainingError(f"Checkpoint {step} lacks the DPO reference.", code="bad_checkpoint")
        checkpoint = CheckpointState.model_validate_json((folder / layout.STATE_FILE).read_text(encoding="utf-8"))
        self.elapsed_before = checkpoint.elapsed_s
        self.last_loss = checkpoint.loss
