"""Benchmark: the studio's own decode loop (studio/runtime/decode.py) vs transformers' model.generate(), CPU.

Run from the repo root:  python bench/bench_decode.py [--seconds 10] [--step-seconds 2] [--threads N]

A musicgen-small-shaped model with random weights is built from a config in a temporary directory (decoder 24 layers
x 1024, 16 heads, ffn 4096, 4 codebooks x 2048; EnCodec shaped like facebook/encodec_32khz; a 1-layer T5 768 wide
as text encoder, so enc_to_dec_proj is there as in musicgen-small) and loaded through the studio's backend.
Nothing is downloaded. Printed (never asserted; one run, read the ratios):

  1. ms per decoder step, batch 1 with guidance 3.0 (top-k 250 sampling), own loop vs generate(), same steps
     (--step-seconds of audio: 2 s = 103 steps), from per-step callbacks (text encoder and EnCodec excluded);
     ratio (goal <= 0.85), and the floor: decoder weight bytes read per step / measured memory bandwidth.
  2. 4 rows of --seconds in one batch vs 1 row: wall time ratio (goal <= 1.6).
  3. time to the first streamed audio vs the whole --seconds clip (goal <= 0.15), and how far the concatenated
     stream is from the full decode (max abs / RMS, RMS diff / RMS, largest jump at joins vs inside chunks).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

from studio.registry import parse_registry  # noqa: E402
from studio.runtime.backend import DecodeHooks, Row, SamplingParams  # noqa: E402
from studio.runtime.transformers_backend import TransformersBackend  # noqa: E402

PROMPT = "calm lofi piano beat with warm bass"
SAMPLE = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)
SPEC = {
    "id": "small-shaped", "display_name": "Small-shaped random", "backend": "transformers",
    "source": {"builtin": "studio-tiny"}, "parameters": 1, "sample_rate": 32000, "channels": 1, "frame_rate": 50,
    "max_duration_s": 30, "memory_gb": 2,
    "generation": {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0},
}


def build_small_shaped(folder: Path, *, layers: int = 24, hidden: int = 1024, heads: int = 16, ffn: int = 4096,
                       seed: int = 0) -> Path:
    """A musicgen-small-shaped MusicGen with random weights, saved like a hub model (model + processor)."""
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    from studio.runtime.tiny import _tokenizer

    text = T5Config(vocab_size=64, d_model=768, d_kv=64, d_ff=256, num_layers=1, num_heads=12,
                    decoder_start_token_id=0, pad_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=128, num_filters=64,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
                          codebook_dim=128, target_bandwidths=[2.2], num_lstm_layers=2, use_causal_conv=False,
                          norm_type="weight_norm", pad_mode="reflect", compress=2, normalize=False)
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=heads, ffn_dim=ffn, num_codebooks=4,
                                    max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048,
                                    audio_channels=1)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    config.decoder.decoder_start_token_id = 2048
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf))
    processor = MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
                                  tokenizer=_tokenizer())
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


class StepTimes(DecodeHooks):
    def __init__(self):
        self.times, self.first_audio, self.chunks = [], None, []

    def on_step(self, done, total):
        self.times.append(time.perf_counter())

    def on_audio(self, row, start, chunk):
        if self.first_audio is None:
            self.first_audio = time.perf_counter()
        self.chunks.append((start, chunk))


class GenerateSteps(StoppingCriteria):
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def ms_per_step(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1) * 1000


def bandwidth_gbs() -> tuple[float, float]:
    """(copy GB/s counting read + write, GB/s of weights read by the decode loop's CPU matrix products with 2
    rows), best of a few runs over 256 MiB (far beyond the caches)."""
    big = torch.empty(64 * 1024 * 1024)  # 256 MiB
    big.normal_()
    dst = torch.empty_like(big)
    best_copy = min(_timed(lambda: dst.copy_(big)) for _ in range(5))
    weights = [torch.randn(4096, 1024) for _ in range(16)]  # 256 MiB of fc1-shaped weights
    x = torch.randn(2, 1024)  # one row + its unconditional twin
    best_mv = min(_timed(lambda: [torch.mm(w, x.T) for w in weights]) for _ in range(5))
    return 2 * big.numel() * 4 / best_copy / 1e9, 16 * weights[0].numel() * 4 / best_mv / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stream_figures(full: np.ndarray, chunks) -> str:
    stream = np.concatenate([c for _, c in chunks])
    rms = float(np.sqrt(np.mean(full ** 2))) or 1.0
    diff = stream - full
    joins = np.cumsum([len(c) for _, c in chunks])[:-1]
    jumps = np.abs(np.diff(stream[:, 0]))
    inside = np.delete(jumps, joins - 1)
    return (f"max abs diff / RMS {np.abs(diff).max() / rms:.3g}, RMS diff / RMS "
            f"{np.sqrt(np.mean(diff ** 2)) / rms:.3g}, largest jump at the {len(joins)} joins "
            f"{jumps[joins - 1].max():.3g} vs inside chunks {inside.max():.3g} (99.9th pct inside "
            f"{np.percentile(inside, 99.9):.3g})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length for the batch and streaming parts")
    ap.add_argument("--step-seconds", type=float, default=2.0, help="clip length for the ms/step part")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--runs", type=int, default=2, help="interleaved runs for the ms/step part (median)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        print("building a musicgen-small-shaped random model ...", flush=True)
        folder = build_small_shaped(Path(tmp) / "small")
        spec = parse_registry({"default_model": "small-shaped", "models": [SPEC]}).get("small-shaped")
        loaded = TransformersBackend().load(folder, spec, torch.device("cpu"), torch.float32)
        model = loaded.model
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

        copy_bw, mv_bw = bandwidth_gbs()
        layers = model.decoder.model.decoder.layers
        # what one step reads: every decoder layer weight but the cross-attention keys/values (computed once per
        # batch by both loops), plus the lm_heads
        weight_bytes = sum(p.numel() * p.element_size() for name, p in layers.named_parameters()
                           if not name.split(".")[1:3] in (["encoder_attn", "k_proj"], ["encoder_attn", "v_proj"]))
        weight_bytes += sum(p.numel() * p.element_size() for p in model.decoder.lm_heads.parameters())
        floor = weight_bytes / (mv_bw * 1e9) * 1000
        print(f"memory bandwidth: copy {copy_bw:.1f} GB/s, fp32 matrix-vector {mv_bw:.1f} GB/s; decoder weights read "
              f"per step {weight_bytes / 1e6:.0f} MB -> floor {floor:.1f} ms/step")

        # 1. ms per step, batch 1 with guidance
        frames = round(args.step_seconds * 50)
        steps = frames + 3
        inputs = loaded.processor(text=[PROMPT], padding=True, return_tensors="pt")
        row = Row(PROMPT, frames, seed=1, params=SAMPLE)

        def own() -> float:
            hooks = StepTimes()
            loaded.generate_batch([row], hooks, stream_every_s=None)
            return ms_per_step(hooks.times)

        def reference() -> float:
            hook = GenerateSteps()
            torch.manual_seed(1)
            with torch.inference_mode():
                model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps,
                               stopping_criteria=StoppingCriteriaList([hook]))
            return ms_per_step(hook.times)

        own(), reference()  # warm-up
        mine, theirs = [], []
        for i in range(args.runs):
            for fn, out in ((own, mine), (reference, theirs)) if i % 2 == 0 else ((reference, theirs), (own, mine)):
                out.append(fn())
        m, r = statistics.median(mine), statistics.median(theirs)
        print(f"[1] {steps} steps, batch 1 + guidance: own loop {m:.1f} ms/step, generate() {r:.1f} ms/step "
              f"(runs: own {['%.1f' % x for x in mine]}, generate {['%.1f' % x for x in theirs]})")
        print(f"    own loop / generate() = {m / r:.2f} (goal <= 0.85); floor {floor:.1f} ms/step: own loop at "
              f"{m / floor:.2f}x the floor, generate() at {r / floor:.2f}x")

        # 2. 4 rows in one batch vs 1 row, and 3. streaming, on --seconds clips
        frames = round(args.seconds * 50)
        rows = [Row(p, frames, seed=i, params=SAMPLE) for i, p in enumerate(
            [PROMPT, "epic orchestral drums", "happy guitar pop", "dark ambient synth"])]
        hooks = StepTimes()
        start = time.perf_counter()
        result = loaded.generate_batch(rows[:1], hooks, stream_every_s=1.0)[0]
        one = time.perf_counter() - start
        first = hooks.first_audio - start
        one_step = ms_per_step(hooks.times)
        hooks4 = StepTimes()
        start = time.perf_counter()
        loaded.generate_batch(rows, hooks4, stream_every_s=1.0)
        four = time.perf_counter() - start
        print(f"[2] {args.seconds:g} s clips, streaming on: 1 row {one:.1f} s, 4 rows in one batch {four:.1f} s: "
              f"ratio {four / one:.2f} (goal <= 1.6); ms/step incl. streaming: 1 row {one_step:.1f}, "
              f"4 rows {ms_per_step(hooks4.times):.1f}")
        print(f"[3] first streamed audio after {first:.2f} s of {one:.1f} s for the whole clip: ratio "
              f"{first / one:.3f} (goal <= 0.15)")
        print(f"    stream vs full decode ({len(hooks.chunks)} chunks): {stream_figures(result.audio, hooks.chunks)}")


if __name__ == "__main__":
    main()
