"""Benchmark the hybrid attention op alone against causal SDPA on the same inputs.

    python -m benchmarks.attention_op --preset gpu            # Qwen3-VL-8B shapes, T = 8k .. 128k
    python -m benchmarks.attention_op --preset cpu            # torch backend, T = 16k
    python -m benchmarks.attention_op --preset gpu --lengths 2048 --dense-fractions 0.25

Every configuration reports min / mean / median seconds, achieved TFLOP/s, the ideal
speedup (causal SDPA FLOPs / hybrid FLOPs) and the measured one (mean SDPA time / mean
hybrid time). FLOPs count attended (query, key) pairs only, 4 * D per pair (Q @ K^T and
P @ V, a multiply-add each), so a perfect kernel's measured speedup equals the ideal.
One JSON line per (length, dense fraction) is appended to the results file. On CPU the
torch backend's streaming heads run on the fused C++ kernel when it builds; the row then
also times the same op on the SDPA composition ("composed"), interleaved with the others.

Protocol: GPU times with CUDA events after warm-up passes (the warm-up also runs Triton's
autotuning), and an out-of-memory error skips that configuration only. CPU times with
time.perf_counter in one process, the two methods interleaved run by run so that thermal or
background drift hits both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import pathlib
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from core_attn import hybrid_attention
from core_attn.ops import cpu_kernel

RESULTS = pathlib.Path(__file__).parent / "results" / "attention_op.jsonl"


@dataclasses.dataclass(frozen=True)
class Preset:
    device: str
    backend: str  # hybrid_attention backend
    lengths: tuple[int, ...]
    dense_fractions: tuple[float, ...]  # share of q_heads kept dense
    batch: int
    hq: int
    hkv: int
    head_dim: int
    dtype: torch.dtype
    sink_size: int
    window_size: int
    warmup: int
    repeats: int


PRESETS = {
    # Qwen3-VL-8B text layers: 32 q_heads, 8 kv_heads, head dim 128, bf16.
    "gpu": Preset(
        device="cuda",
        backend="triton",
        lengths=(8192, 16384, 32768, 65536, 131072),
        dense_fractions=(1.0, 0.25, 0.1, 0.05, 0.025),
        batch=1,
        hq=32,
        hkv=8,
        head_dim=128,
        dtype=torch.bfloat16,
        sink_size=128,
        window_size=1024,
        warmup=2,
        repeats=5,
    ),
    # One dense q_head of 16; a single warm-up pass, as CPU kernels need no compilation.
    "cpu": Preset(
        device="cpu",
        backend="torch",
        lengths=(16384,),
        dense_fractions=(1 / 16,),
        batch=1,
        hq=16,
        hkv=4,
        head_dim=64,
        dtype=torch.float32,
        sink_size=128,
        window_size=1024,
        warmup=1,
        repeats=5,
    ),
}


def dense_head_mask(hq: int, fraction: float) -> torch.Tensor:
    """bool [HQ]: round(fraction * HQ) dense q_heads (at least one), spread evenly over q_heads."""
    n_dense = min(hq, max(1, round(fraction * hq)))
    dense = torch.zeros(hq, dtype=torch.bool)
    dense[torch.linspace(0, hq - 1, n_dense).round().long()] = True
    return dense


def streaming_pairs(t: int, sink_size: int, window_size: int) -> int:
    """Attended (query, key) pairs of one streaming q_head over a causal length-t prefill.

    Row p keeps min(W, p + 1) window keys plus the sinks that fall before its window,
    max(0, min(S, p + 1 - W)).
    """
    p1 = torch.arange(1, t + 1, dtype=torch.int64)  # p + 1
    window = p1.clamp(max=window_size)
    sinks = (p1 - window_size).clamp(min=0, max=sink_size)
    return int((window + sinks).sum())


def attention_flops(t: int, n_dense: int, n_stream: int, batch: int, head_dim: int, sink: int, window: int) -> int:
    dense_pairs = t * (t + 1) // 2
    pairs = n_dense * dense_pairs + n_stream * streaming_pairs(t, sink, window)
    return 4 * head_dim * batch * pairs


def sdpa_causal(device: str):
    """Causal SDPA reading GQA K/V in place (flash backend on CUDA).

    Returns fn(q, k, v) -> out, q [B, HQ, T, D], k/v [B, HKV, T, D].
    """

    def run(q, k, v):
        if device == "cuda":
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    return run


def time_gpu(fn, warmup: int, repeats: int) -> list[float]:
    """Seconds per call, one CUDA event pair per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def time_cpu_interleaved(fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call for each named fn, calls alternating between the fns."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float] | None, flops: int) -> dict:
    if times is None:
        return {"oom": True}
    mean = statistics.fmean(times)
    return {
        "oom": False,
        "min_s": min(times),
        "mean_s": mean,
        "median_s": statistics.median(times),
        "times_s": times,
        "tflops": flops / mean / 1e12,
    }


def environment(device: str) -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=pathlib.Path(__file__).parent
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain")
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "device_name": name,
        "torch": torch.__version__,
        "triton": version("triton"),
        "transformers": version("transformers"),
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,  # uncommitted changes when measured
    }


def run_length(preset: Preset, t: int, fractions, env: dict) -> list[dict]:
    """All dense fractions at one length, on one set of inputs.

    On GPU, SDPA is timed once per length; on CPU it is re-timed beside every fraction so
    the two methods stay interleaved.
    """
    cfg = dict(
        batch=preset.batch,
        hq=preset.hq,
        hkv=preset.hkv,
        head_dim=preset.head_dim,
        dtype=str(preset.dtype).removeprefix("torch."),
        sink_size=preset.sink_size,
        window_size=preset.window_size,
        backend=preset.backend,
        seq_len=t,
    )
    sdpa_flops = attention_flops(t, preset.hq, 0, preset.batch, preset.head_dim, 0, 0)
    sdpa = sdpa_causal(preset.device)
    rows = []
    try:
        torch.manual_seed(0)
        shape_q = (preset.batch, preset.hq, t, preset.head_dim)
        shape_kv = (preset.batch, preset.hkv, t, preset.head_dim)
        q = torch.randn(shape_q, device=preset.device, dtype=preset.dtype)
        k = torch.randn(shape_kv, device=preset.device, dtype=preset.dtype)
        v = torch.randn(shape_kv, device=preset.device, dtype=preset.dtype)
    except torch.OutOfMemoryError:
        q = k = v = None

    # On CPU the torch backend runs streaming heads through the fused C++ kernel when it
    # builds (float32, no padding mask); each row says which path ran.
    fused = preset.device != "cuda" and preset.dtype == torch.float32 and cpu_kernel.available()
    sdpa_times = None
    if q is not None and preset.device == "cuda":
        try:
            sdpa_times = time_gpu(lambda: sdpa(q, k, v), preset.warmup, preset.repeats)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()

    for fraction in fractions:
        dense = dense_head_mask(preset.hq, fraction).to(preset.device)
        n_dense = int(dense.sum())
        flops = attention_flops(
            t, n_dense, preset.hq - n_dense, preset.batch, preset.head_dim, preset.sink_size, preset.window_size
        )

        hybrid = functools.partial(
            hybrid_attention,
            q,
            k,
            v,
            dense,
            sink_size=preset.sink_size,
            window_size=preset.window_size,
            backend=preset.backend,
        )

        hybrid_times = None
        if q is not None and preset.device == "cuda":
            try:
                hybrid_times = time_gpu(hybrid, preset.warmup, preset.repeats)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
        composed_times = None
        if q is not None and preset.device != "cuda":
            fns = {"sdpa": lambda: sdpa(q, k, v), "hybrid": hybrid}
            if fused:  # the same op with its streaming heads on the SDPA composition, for comparison
                fns["composed"] = lambda: _without_kernel(hybrid)
            times = time_cpu_interleaved(fns, preset.warmup, preset.repeats)
            sdpa_times, hybrid_times, composed_times = times["sdpa"], times["hybrid"], times.get("composed")

        sdpa_row, hybrid_row = summary(sdpa_times, sdpa_flops), summary(hybrid_times, flops)
        ideal = sdpa_flops / flops
        row = {
            "benchmark": "attention_op",
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **env,
            "config": {**cfg, "dense_fraction": fraction, "n_dense": n_dense},
            "protocol": {"warmup": preset.warmup, "repeats": preset.repeats},
            **comparison(sdpa_row, hybrid_row, ideal),
        }
        if preset.device != "cuda":
            row["cpu_streaming_path"] = "fused" if fused else "composed"
        if composed_times is not None:
            composed = comparison(sdpa_row, summary(composed_times, flops), ideal)
            row["composed"] = {
                **composed["hybrid"],
                "measured_speedup": composed["measured_speedup"],
                "measured_over_ideal": composed["measured_over_ideal"],
            }
        rows.append(row)
        print_row(row)
    return rows


def _without_kernel(fn):
    with cpu_kernel.use(False):
        return fn()


def comparison(sdpa: dict, hybrid: dict, ideal: float) -> dict:
    """The two methods' summaries and the speedup fields of a row: measured is mean sdpa / mean hybrid."""
    both = not (sdpa["oom"] or hybrid["oom"])
    measured = sdpa["mean_s"] / hybrid["mean_s"] if both else None
    return {
        "sdpa": sdpa,
        "hybrid": hybrid,
        "oom": not both,
        "ideal_speedup": ideal,
        "measured_speedup": measured,
        "measured_over_ideal": measured / ideal if both else None,
    }


def print_header():
    print(
        f"{'T':>7} {'dense':>6} {'n':>3} {'sdpa ms':>9} {'hybrid ms':>10} {'sdpa TF/s':>9} "
        f"{'hyb TF/s':>9} {'ideal':>7} {'measured':>8} {'ratio':>6}"
    )


def print_row(row: dict):
    def fmt(value, spec):
        return "OOM" if value is None else format(value, spec)

    s, h, c = row["sdpa"], row["hybrid"], row["config"]
    sdpa_ms = s["mean_s"] * 1e3 if not s["oom"] else None
    hybrid_ms = h["mean_s"] * 1e3 if not h["oom"] else None
    print(
        f"{c['seq_len']:>7} {c['dense_fraction']:>6.1%} {c['n_dense']:>3} {fmt(sdpa_ms, '9.2f'):>9} "
        f"{fmt(hybrid_ms, '10.2f'):>10} {fmt(s.get('tflops'), '9.2f'):>9} {fmt(h.get('tflops'), '9.2f'):>9} "
        f"{row['ideal_speedup']:>7.2f} {fmt(row['measured_speedup'], '8.2f'):>8} "
        f"{fmt(row['measured_over_ideal'], '6.2f'):>6}",
        flush=True,
    )
    if "cpu_streaming_path" in row:
        print(f"{'':>7} streaming heads on the {row['cpu_streaming_path']} CPU path", flush=True)
    if "composed" in row:
        cm = row["composed"]
        print(
            f"{'':>7} SDPA composition instead: {fmt(cm['mean_s'] * 1e3 if not cm['oom'] else None, '.2f')} ms, "
            f"measured {fmt(cm['measured_speedup'], '.2f')}, ratio {fmt(cm['measured_over_ideal'], '.2f')}",
            flush=True,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default: the preset's)")
    parser.add_argument(
        "--dense-fractions", type=float, nargs="+", help="shares of dense q_heads (default: the preset's)"
    )
    parser.add_argument("--warmup", type=int, help="untimed passes per method (default: the preset's)")
    parser.add_argument("--repeats", type=int, help="timed passes per method (default: the preset's)")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS, help="JSON-lines file rows are appended to")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]
    preset = dataclasses.replace(
        preset,
        **{name: value for name, value in (("warmup", args.warmup), ("repeats", args.repeats)) if value is not None},
    )
    if preset.device == "cuda" and not torch.cuda.is_available():
        parser.error("--preset gpu needs a CUDA device")
    lengths = args.lengths or preset.lengths
    fractions = args.dense_fractions or preset.dense_fractions
    env = environment(preset.device)
    print(f"{env['device_name']}, torch {env['torch']}, triton {env['triton']}, backend={preset.backend}")
    print_header()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for t in lengths:
        rows = run_length(preset, t, fractions, env)
        with args.results.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        if preset.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
