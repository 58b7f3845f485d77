"""End-to-end prefill latency of a language backbone: sdpa vs core_hybrid at several dense fractions.

For each length T, one batch of random token ids [1, T] is prefilled (use_cache=False,
logits_to_keep=1) with attn_implementation "sdpa" and with "core_hybrid" after
``core_attn.attach(model, head_config, dense=fraction)``; the head config holds random scores.
One row per (T, fraction) carries both methods' min / mean / median seconds, achieved
TFLOP/s and peak memory, the measured speedup (mean sdpa / mean hybrid) and the ideal one
from the FLOP split (:func:`prefill_flops`).

Protocol: on CUDA each method alone, CUDA events after the warm-up passes, an
OutOfMemoryError logged for that method and length; on CPU all methods of one length
interleaved call by call with time.perf_counter (see common.time_methods).
"""

from __future__ import annotations

import functools
import pathlib

import torch

import core_attn

from .attention_op import attention_flops, comparison
from .common import (
    model_fields,
    protocol,
    append_rows,
    build_backbone,
    environment,
    prefill,
    random_tokens,
    row_header,
    time_methods,
)
from .registry import Backbone, E2EPrefill

BENCHMARK = "e2e_prefill"


def prefill_flops(backbone: Backbone, t: int, n_dense: int, sink_size: int, window_size: int) -> dict[str, int]:
    """FLOPs of one batch-1 prefill of length t (2 per multiply-add), split into attention and the rest.

    attention: Q @ K^T and P @ V over the attended (query, key) pairs of all L * HQ q_heads,
        n_dense of them causal-dense and the rest sink + window (attention_op.attention_flops).
    other: q / k / v / o projections and the gated MLP (3 matmuls) of every layer, plus the
        LM head on the last position. Norms, RoPE, softmax and residual adds are O(T * hidden)
        elementwise work and are left out.
    """
    b = backbone
    projections = 2 * t * b.hidden * (2 * b.q_heads + 2 * b.kv_heads) * b.head_dim  # q, o: HQ*D; k, v: HKV*D
    mlp = 2 * t * 3 * b.hidden * b.intermediate
    n_heads = b.layers * b.q_heads
    return {
        "attention": attention_flops(t, n_dense, n_heads - n_dense, 1, b.head_dim, sink_size, window_size),
        "other": b.layers * (projections + mlp) + 2 * b.hidden * b.vocab,
    }


def ideal_speedup(sdpa_flops: dict[str, int], hybrid_flops: dict[str, int]) -> float:
    """Speedup if time were proportional to FLOPs: total sdpa FLOPs / total hybrid FLOPs."""
    return sum(sdpa_flops.values()) / sum(hybrid_flops.values())


def random_head_config(backbone: Backbone, seed: int) -> core_attn.HeadConfig:
    """Scores uniform in [0, 1) per (layer, q_head): which q_heads are dense does not change the cost."""
    scores = torch.rand(backbone.layers, backbone.q_heads, generator=torch.Generator().manual_seed(seed))
    return core_attn.HeadConfig.from_scores(scores, num_kv_heads=backbone.kv_heads, model_id=backbone.name)


def sdpa_prefill(model, input_ids: torch.Tensor) -> None:
    """One prefill with attn_implementation "sdpa" on every q_head."""
    model.set_attn_implementation("sdpa")
    prefill(model, input_ids)


def hybrid_prefill(
    model, input_ids: torch.Tensor, head_config: core_attn.HeadConfig, fraction: float, sink_size: int, window_size: int
) -> None:
    """One prefill with "core_hybrid": the top ``fraction`` of q_heads dense, the rest sink + window."""
    core_attn.attach(model, head_config, dense=fraction, sink_size=sink_size, window_size=window_size)
    prefill(model, input_ids)


def run(name: str, entry: E2EPrefill, results: pathlib.Path) -> list[dict]:
    """Measure every length of ``entry``, appending each length's rows to ``results`` as soon as it is done."""
    env = environment(entry.device)
    print(f"{name}: {entry.backbone.name}, {entry.dtype}, {env['device_name']}, torch {env['torch']}")
    model = build_backbone(entry.backbone, entry.dtype, entry.device)
    head_config = random_head_config(entry.backbone, entry.head_seed)
    n_heads = entry.backbone.layers * entry.backbone.q_heads
    print_header()
    rows = []
    for t in entry.lengths:
        ids = random_tokens(entry.backbone.vocab, t, entry.device)
        n_dense = {f: head_config.num_selected(f) for f in entry.dense_fractions}
        flops = {"sdpa": prefill_flops(entry.backbone, t, n_heads, 0, 0)}
        flops |= {f: prefill_flops(entry.backbone, t, n_dense[f], entry.sink_size, entry.window_size) for f in n_dense}
        fns = {"sdpa": functools.partial(sdpa_prefill, model, ids)}
        fns |= {
            f: functools.partial(hybrid_prefill, model, ids, head_config, f, entry.sink_size, entry.window_size)
            for f in n_dense
        }
        measured = time_methods(
            fns, {k: sum(v.values()) for k, v in flops.items()}, entry.device, entry.warmup, entry.repeats
        )
        length_rows = [
            make_row(name, entry, env, t, fraction, n_dense[fraction], flops, measured) for fraction in n_dense
        ]
        for row in length_rows:
            print_row(row)
        append_rows(results, length_rows)
        rows += length_rows
    return rows


def make_row(name, entry, env, t, fraction, n_dense, flops, measured) -> dict:
    sdpa, hybrid = measured["sdpa"], measured[fraction]
    ideal = ideal_speedup(flops["sdpa"], flops[fraction])
    return {
        **row_header(BENCHMARK, name, env),
        "config": {
            **model_fields(entry),
            "seq_len": t,
            "dense_fraction": fraction,
            "n_dense": n_dense,
            "n_heads": entry.backbone.layers * entry.backbone.q_heads,
            "sink_size": entry.sink_size,
            "window_size": entry.window_size,
            "head_scores": f"uniform random, seed {entry.head_seed}",
        },
        "protocol": protocol(entry),
        "flops": {"sdpa": flops["sdpa"], "hybrid": flops[fraction]},
        **comparison(sdpa, hybrid, ideal),
    }


def print_ideal(name: str, entry: E2EPrefill) -> None:
    """The FLOP split and ideal speedup of every (length, fraction), without building a model."""
    n_heads = entry.backbone.layers * entry.backbone.q_heads
    head_config = random_head_config(entry.backbone, entry.head_seed)
    print(f"{name}: {entry.backbone.name}, ideal end-to-end speedups from the FLOP split (not measured)")
    print(f"{'T':>7} {'dense':>6} {'n':>5} {'attn share sdpa':>15} {'attn share hybrid':>17} {'ideal':>6}")
    for t in entry.lengths:
        sdpa = prefill_flops(entry.backbone, t, n_heads, 0, 0)
        for fraction in entry.dense_fractions:
            n = head_config.num_selected(fraction)
            hybrid = prefill_flops(entry.backbone, t, n, entry.sink_size, entry.window_size)
            print(
                f"{t:>7} {fraction:>6.1%} {n:>5} {sdpa['attention'] / sum(sdpa.values()):>15.1%} "
                f"{hybrid['attention'] / sum(hybrid.values()):>17.1%} {ideal_speedup(sdpa, hybrid):>5.2f}x"
            )


def print_header() -> None:
    print(
        f"{'T':>7} {'dense':>6} {'n':>5} {'sdpa s':>8} {'hybrid s':>9} {'measured':>8} {'ideal':>6} "
        f"{'ratio':>5} {'sdpa GiB':>8} {'hyb GiB':>8}"
    )


def print_row(row: dict) -> None:
    def fmt(value, spec, scale=1.0, missing="OOM"):
        return missing if value is None else format(value * scale, spec)

    s, h, c = row["sdpa"], row["hybrid"], row["config"]
    print(
        f"{c['seq_len']:>7} {c['dense_fraction']:>6.1%} {c['n_dense']:>5} {fmt(s.get('mean_s'), '8.3f'):>8} "
        f"{fmt(h.get('mean_s'), '9.3f'):>9} {fmt(row['measured_speedup'], '7.2f') + 'x':>8} "
        f"{row['ideal_speedup']:>5.2f}x {fmt(row['measured_over_ideal'], '5.2f'):>5} "
        f"{fmt(s.get('peak_mem_bytes'), '8.2f', 2**-30, '-'):>8} {fmt(h.get('peak_mem_bytes'), '8.2f', 2**-30, '-'):>8}",
        flush=True,
    )
