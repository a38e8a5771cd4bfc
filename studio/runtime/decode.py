"""The studio's own MusicGen decode loop, replacing transformers' `model.generate()`.

Why not generate(): in transformers 5.23 it drops `streamer=`, grows a DynamicCache by concatenation every step,
and draws every row from one global RNG. This loop drives the decoder's own modules (so PEFT LoRA layers on
q/k/v/out/fc1/fc2 and the lm_heads still apply) over a self-attention KV cache preallocated for the batch's
longest row, computes the cross-attention keys/values once, applies guidance and sampling per row with one
torch.Generator per row, and streams each row's audio while it decodes.

Exactness (tests/runtime/test_decode.py): greedy codes equal model.generate()'s bit for bit, and the logits of every
step equal a plain full-sequence decoder forward within float tolerance.

Stereo models (audio_channels 2) interleave left/right codebooks (0 L, 1 R, 2 L, ...): codebook c has the delay
c // 2, and left and right are decoded by EnCodec separately, as transformers does (tested on a tiny stereo model).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from studio.runtime.backend import DecodeHooks, Row, RowResult

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class StreamSettings:
    """How streamed chunks are cut. EnCodec's decoder has an LSTM and (in the 32 kHz model) non-causal
    convolutions: each window is decoded with `context_frames` already-streamed frames on its left (warming the
    LSTM and the convolutions) and its last `holdback_frames` are held back, because they lack right context:
    the next window re-decodes them and crossfades from the held-back version to its own.

    Measured (concatenated stream vs the full decode of the same codes, 1 s chunks; "joins" = the largest
    sample-to-sample jump at a join vs the largest inside the chunks):
      studio-tiny / the 64-wide test model (causal convolutions, 1 LSTM layer), 3 s: max abs diff / RMS 2e-7 to
        6e-7, RMS diff / RMS ~1e-7 (identical but for float noise); joins 0.055-0.063 vs inside 0.08-0.105.
      musicgen-small-shaped random EnCodec (non-causal convolutions, 2 LSTM layers; bench/bench_decode.py), 10 s,
        context/holdback frames -> max abs diff / RMS, RMS diff / RMS, joins vs inside:
          0/0: 0.16, 0.0040, 0.019 vs 0.039      10/0: 0.083, 0.0028, 0.023 vs 0.039
          0/5: 0.023, 0.0012, 0.030 vs 0.039     10/5 = 25/5 = 50/5: 0.015, 0.0008, 0.030 vs 0.039
          25/10: 0.0085, 0.0004, 0.030 vs 0.039
      The held-back right edge matters most; the left context beyond 10 frames changed nothing with random
      weights (a trained LSTM may remember longer: 25 is kept). No join jumps more than the audio inside chunks.
    """
    context_frames: int = 25  # 0.5 s at 50 Hz
    holdback_frames: int = 5  # 0.1 s, the crossfade length


class _Hooks:
    """The caller's hooks with no-op defaults for whatever it left out."""

    def __init__(self, hooks: DecodeHooks | None):
        self.on_step = getattr(hooks, "on_step", None) or (lambda done, total: None)
        self.stopped = getattr(hooks, "stopped", None) or (lambda row: False)
        self.on_audio = getattr(hooks, "on_audio", None) or (lambda row, start, chunk: None)
        self.on_logits = getattr(hooks, "on_logits", None) or (lambda step, logits: None)


@contextmanager
def mixed_adapters(model: torch.nn.Module, names: list[str] | None) -> Iterator[None]:
    """Run every LoRA layer with PEFT's per-row `adapter_names` (its mixed-batch path, inference only).

    PEFT's LoRA forward takes `adapter_names=` as a keyword (lora/layer.py `Linear.forward` ->
    `_mixed_batch_forward`); PeftModel injects it with forward pre-hooks, which we do too because transformers'
    integration gives no PeftModel. The hook repeats the names to the input's batch: the text encoder sees the
    rows once, the decoder sees them twice with guidance (conditional rows, then the unconditional half).
    The caller restores its own adapter state afterwards (enabling here undoes a 'base model' setting)."""
    if names is None:
        yield
        return
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]

    def hook(module, args, kwargs):
        repeat = args[0].shape[0] // len(names)
        return args, {**kwargs, "adapter_names": names * repeat}

    handles = []
    try:
        for layer in layers:
            layer.enable_adapters(True)  # a disabled layer ignores adapter_names
            handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


class FastPath:
    """The GPU fast path of one loaded model: the decoder step compiled once with torch.compile(mode=
    "reduce-overhead") (CUDA graphs) over static buffers, in half precision (autocast to bfloat16 when the
    weights are float32).

    CUDA graphs replay on fixed addresses and the compiled graph is specialised to shapes, so the buffers of the
    last batch shape are kept and reused, and shapes are bucketed (cache length to a multiple of STEP_BUCKET
    steps, prompt length to a multiple of TEXT_BUCKET tokens, both masked): a new clip length or prompt does not
    recompile. Kept apart from the exact float32 path; measured by bench/bench_gpu_decode.py. compile=False (the
    CPU tests) runs the same static-shape step eagerly."""
    STEP_BUCKET = 256
    TEXT_BUCKET = 32

    def __init__(self, compile: bool = True):
        self.step = torch.compile(_step, mode="reduce-overhead", dynamic=False) if compile else _step
        self.compiled = compile
        self._key: tuple | None = None
        self._buffers: dict | None = None

    def buffers(self, key: tuple, make) -> dict:
        if key != self._key:
            self._buffers, self._key = None, None  # free the old shape's memory first
            self._buffers = make()
            for t in (*self._buffers["k"], *self._buffers["v"], *self._buffers["ck"], *self._buffers["cv"],
                      self._buffers["mask"]):
                torch._dynamo.mark_static_address(t)  # CUDA graphs replay on these very buffers
            self._key = key
        return self._buffers


class _Decoder:
    """The decoder of one batch: preallocated self-attention cache, cross-attention keys/values computed once.

    Rows stay in the batch until the last one ends: a finished or stopped row's later steps are wasted work, but
    the batch keeps fixed shapes (what CUDA graphs need) and no cache is ever copied to drop a row."""

    def __init__(self, model, enc: torch.Tensor, enc_mask: torch.Tensor, max_steps: int,
                 cache_dtype: torch.dtype, fast: FastPath | None = None):
        self.dec = model.decoder.model.decoder
        self.heads = model.decoder.lm_heads
        self.fast = fast
        n, device = enc.shape[0], enc.device
        # CPU: a plain Linear as weight @ x.T (a gemm whose long side is the weight's rows) streams the weights at
        # memory speed for 2-4 rows (one or two rows with guidance); F.linear (what nn.Linear runs) takes 2-4x
        # longer there (musicgen-small-shaped fc1, 2 rows: 0.5 vs 2.1 ms on the 2-core development machine), and
        # from 8 rows on it is as fast or faster. The floats differ from F.linear's in the last bits (greedy codes
        # still equal generate()'s in the tests). PEFT-wrapped layers are always called as modules (adapters apply).
        self.matvec = device.type == "cpu" and fast is None and n <= 4
        first = self.dec.layers[0].self_attn
        head_dim, heads, layers = first.head_dim, first.num_heads, len(self.dec.layers)
        if max_steps > self.dec.embed_positions.weights.size(0):  # what the decoder's forward does too
            self.dec.embed_positions.make_weights(max_steps, self.dec.embed_positions.embedding_dim)
        mask = enc_mask.bool()
        # The unconditional half has an all-zero mask over all-zero states: its cross-attention output is 0 either
        # way (transformers' SDPA path returns 0 for a fully masked row); attending to the zeros says so without
        # relying on a kernel's fully-masked-row behaviour (CUDA kernels differ).
        mask[~mask.any(dim=1)] = True
        kv_shape = (n, enc.shape[1], -1, head_dim)
        cross = [(layer.encoder_attn.k_proj(enc).view(kv_shape).transpose(1, 2),
                  layer.encoder_attn.v_proj(enc).view(kv_shape).transpose(1, 2)) for layer in self.dec.layers]
        if fast is None:
            shape = (n, heads, max_steps, head_dim)
            self.k_cache = [torch.zeros(shape, dtype=cache_dtype, device=device) for _ in range(layers)]
            self.v_cache = [torch.zeros(shape, dtype=cache_dtype, device=device) for _ in range(layers)]
            self.cross_k = [k.to(cache_dtype) for k, _ in cross]
            self.cross_v = [v.to(cache_dtype) for _, v in cross]
            self.cross_mask = None if bool(mask.all()) else mask[:, None, None, :]
            self.positions = None
            return
        steps = -(-max_steps // fast.STEP_BUCKET) * fast.STEP_BUCKET
        text = -(-enc.shape[1] // fast.TEXT_BUCKET) * fast.TEXT_BUCKET

        def make() -> dict:
            def zeros(length):
                return [torch.zeros((n, heads, length, head_dim), dtype=cache_dtype, device=device)
                        for _ in range(layers)]
            return {"k": zeros(steps), "v": zeros(steps), "ck": zeros(text), "cv": zeros(text),
                    "mask": torch.zeros((n, 1, 1, text), dtype=torch.bool, device=device),
                    "positions": torch.arange(steps, device=device)}

        buffers = fast.buffers((n, steps, text, cache_dtype, device), make)
        # Every self-attention slot up to the current position is written before it is read: no zeroing needed.
        self.k_cache, self.v_cache, self.positions = buffers["k"], buffers["v"], buffers["positions"]
        for (k, v), ck, cv in zip(cross, buffers["ck"], buffers["cv"]):
            ck.zero_()
            cv.zero_()
            ck[:, :, :k.shape[2]] = k
            cv[:, :, :v.shape[2]] = v
        buffers["mask"].zero_()
        buffers["mask"][:, 0, 0, :mask.shape[1]] = mask
        self.cross_k, self.cross_v, self.cross_mask = buffers["ck"], buffers["cv"], buffers["mask"]

    def step(self, tokens: torch.Tensor, pos: int | torch.Tensor) -> torch.Tensor:
        """tokens (rows, codebooks) at position pos (a 0-d tensor on the fast path) -> logits (rows, codebooks,
        vocab). On the fast path the result lives in CUDA graph memory until the next step: copy what you keep."""
        fn = _step
        if self.fast is not None:
            fn = self.fast.step
            if self.fast.compiled:
                torch.compiler.cudagraph_mark_step_begin()
        return fn(self.dec, self.heads, self.matvec, tokens, pos, self.k_cache, self.v_cache, self.cross_k,
                  self.cross_v, self.cross_mask, self.positions)


def _linear(matvec: bool, module, x: torch.Tensor) -> torch.Tensor:
    if not matvec or type(module) is not torch.nn.Linear:
        return module(x)
    y = torch.mm(module.weight, x.reshape(-1, x.shape[-1]).T).T
    if module.bias is not None:
        y = y + module.bias
    return y.reshape(*x.shape[:-1], -1)


def _step(dec, heads, matvec: bool, tokens: torch.Tensor, pos, k_cache: list, v_cache: list, cross_k: list,
          cross_v: list, cross_mask, positions):
    """One decoder step over the caches (a plain function of its arguments, so it compiles once per model).
    positions None: python-int position, attention over the cache's filled prefix (the exact path); else static
    shapes: write at a tensor position, attend over the whole buffer with a mask (the fast path)."""
    n, head_dim = tokens.shape[0], dec.layers[0].self_attn.head_dim

    def split(x):
        return x.view(n, 1, -1, head_dim).transpose(1, 2)

    # Same order of operations as MusicgenDecoder.forward (sum over codebooks, then the position).
    x = sum(dec.embed_tokens[k](tokens[:, k:k + 1]) for k in range(tokens.shape[1]))
    static = positions is not None
    if static:
        pos_index = pos.view(1)
        self_mask = (positions <= pos)[None, None, None, :]
    else:
        pos_index = torch.tensor([pos], device=tokens.device)
    x = x + dec.embed_positions.weights.index_select(0, pos_index)
    for i, layer in enumerate(dec.layers):
        residual = x
        h = layer.self_attn_layer_norm(x)
        attn = layer.self_attn
        q = split(_linear(matvec, attn.q_proj, h))
        k = split(_linear(matvec, attn.k_proj, h))
        v = split(_linear(matvec, attn.v_proj, h))
        if static:
            k_cache[i].index_copy_(2, pos_index, k.to(k_cache[i].dtype))
            v_cache[i].index_copy_(2, pos_index, v.to(v_cache[i].dtype))
            o = F.scaled_dot_product_attention(q.to(k_cache[i].dtype), k_cache[i], v_cache[i], attn_mask=self_mask,
                                               scale=attn.scaling)
        else:
            k_cache[i][:, :, pos] = k[:, :, 0]
            v_cache[i][:, :, pos] = v[:, :, 0]
            o = F.scaled_dot_product_attention(q, k_cache[i][:, :, :pos + 1], v_cache[i][:, :, :pos + 1],
                                               scale=attn.scaling)
        x = residual + _linear(matvec, attn.out_proj, o.transpose(1, 2).reshape(n, 1, -1).to(x.dtype))

        residual = x
        h = layer.encoder_attn_layer_norm(x)
        cross = layer.encoder_attn
        q = split(_linear(matvec, cross.q_proj, h))
        o = F.scaled_dot_product_attention(q.to(cross_k[i].dtype), cross_k[i], cross_v[i], attn_mask=cross_mask,
                                           scale=cross.scaling)
        x = residual + _linear(matvec, cross.out_proj, o.transpose(1, 2).reshape(n, 1, -1).to(x.dtype))

        residual = x
        h = layer.final_layer_norm(x)
        x = residual + _linear(matvec, layer.fc2, layer.activation_fn(_linear(matvec, layer.fc1, h)))
    x = dec.layer_norm(x)
    return torch.stack([_linear(matvec, head, x) for head in heads], dim=1)[:, :, 0]


def _guided(logits: torch.Tensor, rows: int, scales: torch.Tensor | None) -> torch.Tensor:
    """Classifier-free guidance per row, as transformers' ClassifierFreeGuidanceLogitsProcessor computes it;
    a row whose scale is <= 1 in a guided batch takes its conditional logits unchanged."""
    logits = logits.float()
    if scales is None:
        return logits
    cond, uncond = logits[:rows], logits[rows:]
    guided = uncond + (cond - uncond) * scales[:, None, None]
    return torch.where((scales > 1)[:, None, None], guided, cond)


def _sample_row(scores: torch.Tensor, params, generator: torch.Generator) -> torch.Tensor:
    """(codebooks, vocab) -> (codebooks,): transformers' warpers in its order (temperature, top-k, top-p), then
    one multinomial draw per codebook from this row's own generator. top_p 0 means off (the studio's setting)."""
    if params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_k:
        top_k = min(max(params.top_k, 1), scores.size(-1))
        scores = scores.masked_fill(scores < torch.topk(scores, top_k)[0][..., -1, None], -float("inf"))
    if 0 < params.top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - params.top_p)
        remove[..., -1:] = 0
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    probs = F.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


class _Codec:
    """EnCodec decoding of one row's codes (codebooks, frames) -> float32 numpy (samples, channels)."""

    def __init__(self, model, channels: int):
        self.encodec, self.channels = model.audio_encoder, channels
        self.hop = int(np.prod(model.config.audio_encoder.upsampling_ratios))

    def __call__(self, codes: torch.Tensor) -> np.ndarray:
        parts = [codes[c::self.channels] for c in range(self.channels)]  # stereo: interleaved left/right codebooks
        audio = [self.encodec.decode(p[None, None], audio_scales=[None]).audio_values[0] for p in parts]
        return torch.cat(audio, dim=0).float().cpu().numpy().T


class _Stream:
    """Streams one row: windows of new complete frames with a short left context; see StreamSettings.

    Frames are counted in the row's whole code sequence (a continued prompt, then every window's new frames), so
    one stream runs across decoding windows; `origin` is the first frame heard (0, or the prompt's length when
    the prompt is not part of the result: its frames still serve as left context)."""

    def __init__(self, codec: _Codec, every_frames: int, want: int, settings: StreamSettings, origin: int = 0):
        self.codec, self.every, self.want, self.s = codec, max(1, every_frames), want, settings
        self.origin = origin
        self.sent = origin  # frames whose samples went out
        self.tail: np.ndarray | None = None  # provisional samples of the held-back frames

    def ready(self, complete: int, frames: int) -> bool:
        return complete == frames > self.sent or complete - self.sent >= self.every + self.s.holdback_frames

    def chunk(self, codes: torch.Tensor, complete: int, frames: int) -> tuple[int, np.ndarray]:
        hop, final = self.codec.hop, complete == frames
        start = max(0, self.sent - self.s.context_frames)
        audio = self.codec(codes[:, start:complete])
        end = complete if final else complete - self.s.holdback_frames
        new = audio[(self.sent - start) * hop:(end - start) * hop].copy()
        if self.tail is not None:  # crossfade from the previous window's provisional samples to these
            n = min(len(self.tail), len(new))
            w = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1, None]
            new[:n] = self.tail[:n] * (1 - w) + new[:n] * w
        self.tail = None if final else audio[(end - start) * hop:].copy()
        first = (self.sent - self.origin) * hop
        if final:  # exactly `want` samples in all, like RowResult.audio
            last = self.want - first
            new = new[:last] if len(new) >= last else np.pad(new, ((0, last - len(new)), (0, 0)))
        self.sent = end
        return first, np.ascontiguousarray(new, dtype=np.float32)


def plan_windows(prompt: int, new: int, window: int | None, stride: int | None) -> list[tuple[int, int]]:
    """How a row of `new` frames continuing `prompt` frames is decoded: [(context frames, new frames)] per window.

    audiocraft's scheme: a window is at most `window` frames; the first one continues the end of the prompt (or
    starts from nothing), each further one keeps the end of what came before as its context and adds at least
    `stride` new frames. Here a window takes as much context as leaves room for min(stride, frames still wanted)
    new frames, so every window but a lone first one is full: the last window of a long piece has more context
    (audiocraft's is shorter), and a short continuation sees as much of its clip as the window holds."""
    if new < 1:
        raise ValueError("every row needs at least one new frame")
    if window is None:
        return [(prompt, new)]
    window = int(window)
    stride = max(1, min(int(stride or window), window - 1 if window > 1 else 1))
    plan, have, left = [], int(prompt), int(new)
    while left > 0:
        context = min(have, max(0, window - min(left, stride)))
        step = min(left, window - context)
        plan.append((context, step))
        have += step
        left -= step
    return plan


def _schedule(plans: list[list[tuple[int, int]]], per_channel: int) -> list[int]:
    """Decoding steps of each window of a batch: its longest row (context + new frames + the delay pattern)."""
    windows = max(len(p) for p in plans)
    return [max(sum(p[k]) + per_channel - 1 for p in plans if len(p) > k) for k in range(windows)]


def decode_batch(model, processor, rows: Sequence[Row], *, frame_rate: float, sample_rate: int,
                 hooks: DecodeHooks | None = None, stream_every_s: float | None = 1.0,
                 adapter_names: list[str] | None = None, fast: FastPath | None = None,
                 stream: StreamSettings = StreamSettings(), window: int | None = None,
                 stride: int | None = None) -> list[RowResult | None]:
    """Decode `rows` together; see the module docstring. adapter_names: per-row PEFT adapter names for a mixed
    batch (None: whatever adapter state the model has). fast: the model's GPU fast path (None: the exact eager
    float32 path). window / stride (frames): rows longer than one window are decoded window by window
    (plan_windows); None: one window however long.

    A row with prompt_codes continues them: in each window, the context frames are forced where the delay
    pattern places them (teacher forcing: guidance, batching and the per-row generators are unchanged) and the
    row samples from its first new frame on. Rows whose windows are over leave the batch of the next windows;
    on_step counts every window's steps of the batch, and each row's stream runs on across windows."""
    if not rows:
        return []
    hooks_ = _Hooks(hooks)
    device = next(model.decoder.parameters()).device
    config = model.config.decoder
    channels = max(1, getattr(config, "audio_channels", 1))
    codebooks = config.num_codebooks
    per_channel = codebooks // channels
    pad = model.generation_config.decoder_start_token_id
    if pad is None:
        pad = config.pad_token_id
    b = len(rows)
    frames = [int(r.frames) for r in rows]
    if min(frames) < 1:
        raise ValueError("every row needs at least one frame")
    prompts: list[torch.Tensor | None] = []
    for r in rows:
        if r.prompt_codes is None or np.asarray(r.prompt_codes).shape[-1] == 0:
            prompts.append(None)
            continue
        p = torch.as_tensor(np.asarray(r.prompt_codes, dtype=np.int64), device=device)
        if p.ndim != 2 or p.shape[0] != codebooks:
            raise ValueError(f"prompt codes must be ({codebooks}, frames), not {tuple(p.shape)}")
        if int(p.min()) < 0 or int(p.max()) >= config.vocab_size:
            raise ValueError(f"prompt codes must lie in 0..{config.vocab_size - 1}")
        prompts.append(p)
    lengths = [0 if p is None else int(p.shape[1]) for p in prompts]
    plans = [plan_windows(lengths[i], frames[i], window, stride) for i in range(b)]
    window_steps = _schedule(plans, per_channel)
    starts = [sum(window_steps[:k]) for k in range(len(window_steps))]  # the batch's step where each window starts
    total = sum(window_steps)
    ends = [starts[len(p) - 1] + window_steps[len(p) - 1] for p in plans]  # the step at which each row is done
    on_plan = getattr(hooks, "on_plan", None)
    if on_plan is not None:
        on_plan(ends, total)
    origins = [0 if r.keep_prompt else lengths[i] for i, r in enumerate(rows)]
    wants = [round((lengths[i] + frames[i] - origins[i]) / frame_rate * sample_rate) for i in range(b)]
    delays = torch.tensor([c // channels for c in range(codebooks)], device=device)
    arange_c = torch.arange(codebooks, device=device)

    generators = []
    for r in rows:
        g = torch.Generator(device=device)
        g.manual_seed(int(r.seed))
        generators.append(g)

    codec = _Codec(model, channels)
    streams = ([_Stream(codec, round(stream_every_s * frame_rate), wants[i], stream, origins[i]) for i in range(b)]
               if stream_every_s else None)
    stopped = [False] * b
    results: list[RowResult | None] = [None] * b
    # Each row's whole code sequence (its prompt, then every window's new frames), undelayed: what the next
    # window's context, the stream and the result read.
    full = [torch.full((codebooks, lengths[i] + frames[i]), pad, dtype=torch.long, device=device) for i in range(b)]
    for i, p in enumerate(prompts):
        if p is not None:
            full[i][:, :lengths[i]] = p
    have = list(lengths)  # frames of each row's sequence known so far

    with torch.inference_mode():
        for k, steps_k in enumerate(window_steps):
            active = [i for i in range(b) if len(plans[i]) > k and not stopped[i]]
            if not active:
                break
            n = len(active)
            sub = [rows[i] for i in active]
            contexts = [plans[i][k][0] for i in active]
            wframes = [sum(plans[i][k]) for i in active]
            offsets = [have[i] - contexts[j] for j, i in enumerate(active)]  # the window's frame 0 in `full`
            own_steps = [f + per_channel - 1 for f in wframes]
            steps_now = max(own_steps)  # fewer than planned when the longest row was cancelled
            scales = torch.tensor([float(r.params.guidance_scale) for r in sub], device=device)
            guided = bool((scales > 1).any())
            names = None if adapter_names is None else [adapter_names[i] for i in active]
            adapters = ExitStack()  # the rows of this window, in PEFT's mixed-batch forward when they differ
            adapters.enter_context(mixed_adapters(model, names))
            try:
                decoder, autocast = _make_decoder(model, processor, sub, guided, steps_now, fast, device)
                # The context's codes where the delay pattern puts them: codebook c's frame f at step f + delay(c).
                forced = torch.zeros((n, codebooks, steps_now), dtype=torch.bool, device=device)
                forced_val = torch.full((n, codebooks, steps_now), pad, dtype=torch.long, device=device)
                for j, i in enumerate(active):
                    ctx = contexts[j]
                    if ctx:
                        for c in range(codebooks):
                            d = c // channels
                            forced[j, c, d:d + ctx] = True
                            forced_val[j, c, d:d + ctx] = full[i][c, offsets[j]:offsets[j] + ctx]
                frames_t = torch.tensor(wframes, device=device)
                seq = torch.full((n, codebooks, steps_now + 1), pad, dtype=torch.long, device=device)
                greedy = [j for j, r in enumerate(sub) if not r.params.do_sample]
                sampled = [j for j, r in enumerate(sub) if r.params.do_sample]
                base = starts[k]
                t = -1
                for t in range(steps_now):
                    tokens = seq[:, :, t]
                    if guided:
                        tokens = torch.cat([tokens, tokens])
                    with autocast:
                        logits = decoder.step(tokens, torch.tensor(t, device=device) if fast is not None else t)
                    hooks_.on_logits(base + t, logits)
                    scores = _guided(logits, n, scales if guided else None)
                    nxt = torch.empty((n, codebooks), dtype=torch.long, device=device)
                    if greedy:
                        nxt[greedy] = torch.argmax(scores[greedy], dim=-1)
                    for j in sampled:
                        if t >= contexts[j]:  # inside its context every codebook is forced: no draw
                            nxt[j] = _sample_row(scores[j], sub[j].params, generators[active[j]])
                    nxt = torch.where(forced[:, :, t], forced_val[:, :, t], nxt)
                    # The delay pattern: codebook c holds frame t - delay[c] at position t + 1, pad before and after.
                    valid = (t >= delays)[None, :] & (t < frames_t[:, None] + delays[None, :])
                    seq[:, :, t + 1] = torch.where(valid, nxt, pad)
                    hooks_.on_step(base + t + 1, total)
                    done_frame = t + 1 - per_channel  # the frame every codebook has now
                    alive = False
                    for j, i in enumerate(active):
                        if stopped[i] or t >= own_steps[j]:
                            continue
                        stopped[i] = bool(hooks_.stopped(i))
                        if stopped[i]:
                            continue
                        if contexts[j] <= done_frame < wframes[j]:
                            full[i][:, offsets[j] + done_frame] = seq[j, arange_c, done_frame + delays + 1]
                        if streams is not None:
                            complete = offsets[j] + max(contexts[j], min(wframes[j], done_frame + 1))
                            whole = lengths[i] + frames[i]
                            if streams[i].ready(complete, whole):
                                start, chunk = streams[i].chunk(full[i], complete, whole)
                                hooks_.on_audio(i, start, chunk)
                        alive = alive or t + 1 < own_steps[j]
                    if not alive:
                        break
            finally:
                adapters.close()
            del decoder
            for j, i in enumerate(active):
                if stopped[i] or t + 1 < own_steps[j]:
                    stopped[i] = True
                    continue
                have[i] = offsets[j] + wframes[j]
                if len(plans[i]) == k + 1:  # its last window: the row is done
                    results[i] = _result(codec, full[i], origins[i], wants[i], len(plans[i]), stream)
            if steps_now < steps_k and not all(stopped):
                hooks_.on_step(base + steps_k, total)  # a cancelled row's steps are not decoded: skip them
    return [None if stopped[i] else results[i] for i in range(b)]


def _result(codec: _Codec, full: torch.Tensor, origin: int, want: int, windows: int,
            stream: StreamSettings) -> RowResult:
    """A finished row: its codes from `origin` on and their audio, exactly `want` samples; a prompt left out of
    the result is still decoded as left context (the first samples heard continue it smoothly)."""
    left = max(0, origin - stream.context_frames)
    audio = codec(full[:, left:])[(origin - left) * codec.hop:]
    audio = audio[:want] if len(audio) >= want else np.pad(audio, ((0, want - len(audio)), (0, 0)))
    return RowResult(codes=full[:, origin:].cpu().numpy().astype(np.int64),
                     audio=np.ascontiguousarray(audio, dtype=np.float32), windows=windows)


def _text_states(model, processor, rows: Sequence[Row], guided: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The T5 states of the rows' prompts projected to the decoder's width, and their mask; with guidance, the
    unconditional half after them (zero states, zero mask: transformers' generate)."""
    inputs = processor(text=[r.prompt for r in rows], padding=True, return_tensors="pt").to(device)
    enc = model.text_encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).last_hidden_state
    mask = inputs.attention_mask
    if guided:
        enc = torch.cat([enc, torch.zeros_like(enc)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
    if (model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
            and getattr(model.decoder.config, "cross_attention_hidden_size", None) is None):  # Melody: no such field
        enc = model.enc_to_dec_proj(enc)
    return enc * mask[..., None], mask  # as MusicgenForConditionalGeneration.forward does


def _make_decoder(model, processor, rows: Sequence[Row], guided: bool, total: int, fast: FastPath | None,
                  device) -> tuple["_Decoder | _PrefixDecoder", object]:
    """The batch's conditioning and a decoder over it for `total` steps, with the autocast context its steps run
    in. The seam for other conditioning: a decoder is anything with step(tokens, pos) -> logits (rows, or twice
    the rows with guidance: conditional first; codebooks; vocab)."""
    enc, mask = _text_states(model, processor, rows, guided, device)
    if is_melody_model(model):
        return _PrefixDecoder(model, *_melody_prefix(model, rows, enc, mask, guided), total), nullcontext()
    if any(r.melody is not None for r in rows):
        raise ValueError("this model takes no melody (MusicGen Melody models do)")
    autocast = nullcontext()
    if fast is not None and device.type == "cuda":
        half = enc.dtype if enc.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        if enc.dtype == torch.float32:
            autocast = torch.autocast(device_type="cuda", dtype=half)
        with autocast:
            return _Decoder(model, enc, mask, total, cache_dtype=half, fast=fast), autocast
    return _Decoder(model, enc, mask, total, cache_dtype=enc.dtype, fast=fast), autocast


def _undelay(seq: torch.Tensor, frames: int, per_channel: int, channels: int) -> torch.Tensor:
    """(codebooks, steps + 1) with the delay pattern -> (codebooks, frames): codebook c's frame f sits at position
    f + delay(c) + 1."""
    return torch.stack([seq[c, c // channels + 1:c // channels + 1 + frames] for c in range(seq.shape[0])])


# ---- MusicGen Melody ---------------------------------------------------------------------------------------------

def is_melody_model(model) -> bool:
    """MusicgenMelodyForConditionalGeneration (its decoder has no cross-attention)."""
    return getattr(model.config, "model_type", None) == "musicgen_melody"


def _melody_prefix(model, rows: Sequence[Row], enc: torch.Tensor, mask: torch.Tensor,
                   guided: bool) -> tuple[torch.Tensor, list[int]]:
    """Each row's conditioning prefix, as MusicgenMelodyForConditionalGeneration.generate builds it: the chroma
    (frames, 12) projected to the decoder's width and tiled (repeated whole, then cut) to config.chroma_length
    frames, then the row's projected text states. A row without a melody gets generate's null melody (one frame
    lit on the first pitch class); the unconditional half of guidance has the null melody and zero text states of
    the same length as its row's.

    Rows are right-aligned in a (rows, longest, width) tensor and their real lengths returned: the padding slots
    at the start are masked out of attention and each row's positions start at its own first slot, so a row's
    codes are those it gets decoded alone (transformers' batched generate pads prompts on the right and attends
    the zeros, which makes a row depend on its batch mates' prompt lengths)."""
    config = model.config
    dec_width = model.decoder.config.hidden_size
    dtype = enc.dtype
    device = enc.device
    b = len(rows)

    def project(chroma: torch.Tensor) -> torch.Tensor:  # (frames, num_chroma) -> (chroma_length, width)
        h = chroma.to(device=device, dtype=dtype)[None]
        if config.num_chroma != dec_width:
            h = model.audio_enc_to_dec_proj(h)
        h = h.repeat(1, -(-config.chroma_length // h.shape[1]), 1)
        return h[0, :config.chroma_length]

    def null(frames: int) -> torch.Tensor:
        n = torch.zeros((frames, config.num_chroma))
        n[:, 0] = 1
        return n

    # audiocraft's own "no melody" is an all-zero prefix (its conditioner masks the null clip's chroma out), which
    # a model imported from an audiocraft checkpoint was trained with; transformers' generate lights one pitch class
    if getattr(config, "null_melody", None) == "zeros":
        null_prefix = torch.zeros((config.chroma_length, dec_width), dtype=dtype, device=device)
    else:
        null_prefix = project(null(1))

    text_lengths = mask[:b].sum(dim=1).tolist()
    if guided:  # the unconditional rows' zero text states are as long as their rows' (generate attends them)
        text_lengths += text_lengths
    audio = []
    for r in rows:
        if r.melody is not None:
            melody = torch.as_tensor(np.asarray(r.melody, dtype=np.float32))
            if melody.ndim != 2 or melody.shape[1] != config.num_chroma or melody.shape[0] < 1:
                raise ValueError(f"a melody is (frames, {config.num_chroma}) chroma, not {tuple(melody.shape)}")
            audio.append(project(melody))
        else:
            audio.append(null_prefix)
    if guided:
        audio += [null_prefix] * b  # generate's null melody has its row's frames: all equal after tiling
    lengths = [config.chroma_length + int(n) for n in text_lengths]
    longest = max(lengths)
    prefix = torch.zeros((len(audio), longest, dec_width), dtype=dtype, device=device)
    for i, (a, n) in enumerate(zip(audio, lengths)):
        start = longest - n
        prefix[i, start:start + config.chroma_length] = a
        if i < b:  # the text's real tokens, wherever the tokenizer put its padding
            prefix[i, start + config.chroma_length:] = enc[i][mask[i].bool()]
        # (the unconditional rows' text states stay zeros, as long as their rows')
    return prefix, lengths


class _PrefixDecoder:
    """The decoder of one batch for MusicGen Melody: the conditioning is a prefix of the decoder's own sequence
    (no cross-attention). The prefix runs once through every layer to fill a preallocated self-attention cache;
    each step then attends over the prefix and the codes so far.

    Rows' prefixes differ in length (their prompts' tokens): each is right-aligned, the slots before it masked out
    (each padding slot attends to itself only, so no row of the attention is fully masked), and a row's positions
    count from its own first slot. Same order of operations as MusicgenMelodyDecoder.forward: tokens summed over
    codebooks, plus the sinusoidal position, then each layer (self-attention, feed-forward), then the final norm."""

    def __init__(self, model, prefix: torch.Tensor, lengths: list[int], max_steps: int):
        self.dec = model.decoder.model.decoder
        self.heads = model.decoder.lm_heads
        n, width = prefix.shape[0], prefix.shape[1]
        device = prefix.device
        first = self.dec.layers[0].self_attn
        self.head_dim, heads = first.head_dim, first.num_heads
        self.width = width
        self.matvec = device.type == "cpu" and n <= 4
        need = max(lengths) + max_steps
        if need > self.dec.embed_positions.weights.size(0):  # what the decoder's forward does too
            self.dec.embed_positions.make_weights(need, self.dec.embed_positions.embedding_dim)
        lengths_t = torch.tensor(lengths, device=device)
        self.offsets = width - lengths_t  # padding slots before each row's prefix
        self.lengths = lengths_t
        slots = torch.arange(width, device=device)
        real = slots[None, :] >= self.offsets[:, None]  # (rows, width)
        self.padded = bool((~real).any())
        shape = (n, heads, width + max_steps, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=prefix.dtype, device=device) for _ in self.dec.layers]
        self.v_cache = [torch.zeros(shape, dtype=prefix.dtype, device=device) for _ in self.dec.layers]
        # The step's key mask: the padding slots stay masked; the codes' slots are always attended.
        self.key_mask = torch.cat([real, torch.ones((n, max_steps), dtype=torch.bool, device=device)], dim=1)

        positions = (slots[None, :] - self.offsets[:, None]).clamp(min=0)
        x = prefix + self.dec.embed_positions.weights[positions].to(prefix.dtype)
        causal = slots[None, :] <= slots[:, None]  # (query, key)
        attn_mask = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]
        attn_mask = attn_mask[:, None] if self.padded else None
        for i, layer in enumerate(self.dec.layers):
            residual = x
            h = layer.self_attn_layer_norm(x)
            attn = layer.self_attn
            q, k, v = (self._split(proj(h)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            self.k_cache[i][:, :, :width] = k
            self.v_cache[i][:, :, :width] = v
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                               scale=attn.scaling)
            x = residual + attn.out_proj(o.transpose(1, 2).reshape(n, width, -1))
            residual = x
            x = residual + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], -1, self.head_dim).transpose(1, 2)

    def step(self, tokens: torch.Tensor, pos: int | torch.Tensor) -> torch.Tensor:
        """tokens (rows, codebooks) at step pos (0: the start token) -> logits (rows, codebooks, vocab)."""
        pos = int(pos)
        n = tokens.shape[0]
        slot = self.width + pos
        x = sum(self.dec.embed_tokens[k](tokens[:, k:k + 1]) for k in range(tokens.shape[1]))
        x = x + self.dec.embed_positions.weights[self.lengths + pos][:, None].to(x.dtype)
        mask = self.key_mask[:, None, None, :slot + 1] if self.padded else None
        for i, layer in enumerate(self.dec.layers):
            residual = x
            h = layer.self_attn_layer_norm(x)
            attn = layer.self_attn
            q = self._split(_linear(self.matvec, attn.q_proj, h))
            self.k_cache[i][:, :, slot] = self._split(_linear(self.matvec, attn.k_proj, h))[:, :, 0]
            self.v_cache[i][:, :, slot] = self._split(_linear(self.matvec, attn.v_proj, h))[:, :, 0]
            o = F.scaled_dot_product_attention(q, self.k_cache[i][:, :, :slot + 1], self.v_cache[i][:, :, :slot + 1],
                                               attn_mask=mask, scale=attn.scaling)
            x = residual + _linear(self.matvec, attn.out_proj, o.transpose(1, 2).reshape(n, 1, -1))
            residual = x
            h = layer.final_layer_norm(x)
            x = residual + _linear(self.matvec, layer.fc2, layer.activation_fn(_linear(self.matvec, layer.fc1, h)))
        x = self.dec.layer_norm(x)
        return torch.stack([_linear(self.matvec, head, x) for head in self.heads], dim=1)[:, :, 0]
