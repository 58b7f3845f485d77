"""Memory at long context: RAM extraction vs a plain forward, and the longest prefill that fits.

RamMemory: on the same random token ids [1, T], a plain sdpa forward (use_cache=False,
logits_to_keep=1) and ``core_attn.ram_scores(model, inputs, query_index, target_index)``,
which runs that forward under the RAM probe. One row per T with both methods' min / mean /
median seconds and peak memory, and the ratios RAM / forward.

OomBoundary, for CUDA devices (on a CPU the operating system kills the process instead of
raising): for each setting (sdpa, core_hybrid at each dense fraction, RAM extraction) the
lengths in increasing order, one untimed forward each, until torch.OutOfMemoryError. One row per setting: peak memory at every length that fit, the longest
one and the first that did not.
"""

from __future__ import annotations

import functools
import pathlib

import torch

import core_attn

from .common import (
    model_fields,
    protocol,
    PeakMemory,
    append_rows,
    build_backbone,
    environment,
    random_tokens,
    row_header,
    time_methods,
)
from .e2e_prefill import hybrid_prefill, prefill_flops, random_head_config, sdpa_prefill
from .registry import Backbone, OomBoundary, RamMemory


def probe_positions(t: int, n_query: int, n_target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query_index long [n_query]: the last tokens, target_index long [n_target]: a block mid-sequence)."""
    start = max(0, t // 2 - n_target // 2)
    return torch.arange(t - n_query, t), torch.arange(start, min(start + n_target, t - n_query))


def probe_flops(backbone: Backbone, t: int, n_query: int) -> int:
    """Extra FLOPs of the probe: scores of n_query rows against all t keys, per q_head of every layer."""
    return 2 * backbone.layers * backbone.q_heads * backbone.head_dim * n_query * t


def ram_extraction(model, input_ids: torch.Tensor, n_query: int, n_target: int) -> torch.Tensor:
    """RAM fp32 [L, HQ] of random tokens [1, T], measured on the sdpa forward (see :func:`probe_positions`)."""
    model.set_attn_implementation("sdpa")
    query_index, target_index = probe_positions(input_ids.shape[1], n_query, n_target)
    return core_attn.ram_scores(model, {"input_ids": input_ids}, query_index, target_index)


def run_ram(name: str, entry: RamMemory, results: pathlib.Path) -> list[dict]:
    """Measure every length of ``entry``, appending each row to ``results`` as soon as it is done."""
    env = environment(entry.device)
    print(f"{name}: {entry.backbone.name}, {entry.dtype}, {env['device_name']}, torch {env['torch']}")
    model = build_backbone(entry.backbone, entry.dtype, entry.device)
    print(f"{'T':>7} {'forward s':>9} {'RAM s':>8} {'time x':>6} {'fwd GiB':>8} {'RAM GiB':>8} {'peak x':>6}")
    n_heads = entry.backbone.layers * entry.backbone.q_heads
    rows = []
    for t in entry.lengths:
        ids = random_tokens(entry.backbone.vocab, t, entry.device)
        forward_flops = sum(prefill_flops(entry.backbone, t, n_heads, 0, 0).values())
        fns = {
            "forward": functools.partial(sdpa_prefill, model, ids),
            "ram": functools.partial(ram_extraction, model, ids, entry.n_query, entry.n_target),
        }
        flops = {"forward": forward_flops, "ram": forward_flops + probe_flops(entry.backbone, t, entry.n_query)}
        measured = time_methods(fns, flops, entry.device, entry.warmup, entry.repeats)
        forward, ram = measured["forward"], measured["ram"]
        both = not (forward["oom"] or ram["oom"])
        peaks = (forward.get("peak_mem_bytes"), ram.get("peak_mem_bytes"))
        row = {
            **row_header("ram_memory", name, env),
            "config": {
                **model_fields(entry),
                "seq_len": t,
                "n_query": entry.n_query,
                "n_target": entry.n_target,
            },
            "protocol": protocol(entry),
            "forward": forward,
            "ram": ram,
            "oom": not both,
            "time_ratio": ram["mean_s"] / forward["mean_s"] if both else None,
            "peak_mem_ratio": peaks[1] / peaks[0] if both and None not in peaks else None,
            "extra_peak_mem_bytes": peaks[1] - peaks[0] if both and None not in peaks else None,
        }
        print_ram_row(row)
        append_rows(results, [row])
        rows.append(row)
    return rows


def print_ram_row(row: dict) -> None:
    def fmt(value, spec, scale=1.0):
        return "-" if value is None else format(value * scale, spec)

    f, r = row["forward"], row["ram"]
    gib = 2**-30
    print(
        f"{row['config']['seq_len']:>7} {fmt(f.get('mean_s'), '9.3f'):>9} {fmt(r.get('mean_s'), '8.3f'):>8} "
        f"{fmt(row['time_ratio'], '6.2f'):>6} {fmt(f.get('peak_mem_bytes'), '8.2f', gib):>8} "
        f"{fmt(r.get('peak_mem_bytes'), '8.2f', gib):>8} {fmt(row['peak_mem_ratio'], '6.3f'):>6}",
        flush=True,
    )


def run_oom(name: str, entry: OomBoundary, results: pathlib.Path) -> list[dict]:
    """For each setting, the longest of ``entry.lengths`` that prefills without OutOfMemoryError."""
    env = environment(entry.device)
    print(f"{name}: {entry.backbone.name}, {entry.dtype}, {env['device_name']}, torch {env['torch']}")
    model = build_backbone(entry.backbone, entry.dtype, entry.device)
    head_config = random_head_config(entry.backbone, entry.head_seed)
    settings = {
        ("sdpa", None): sdpa_prefill,
        ("ram", None): functools.partial(ram_extraction, n_query=entry.n_query, n_target=entry.n_target),
    }
    for f in entry.dense_fractions:
        settings[("hybrid", f)] = functools.partial(
            hybrid_prefill,
            head_config=head_config,
            fraction=f,
            sink_size=entry.sink_size,
            window_size=entry.window_size,
        )
    total = torch.cuda.get_device_properties(0).total_memory if entry.device == "cuda" else None
    rows = []
    for (setting, fraction), fn in settings.items():
        fits, first_oom = [], None
        for t in entry.lengths:
            memory = PeakMemory(entry.device)
            try:
                memory.track(functools.partial(fn, model, random_tokens(entry.backbone.vocab, t, entry.device)))()
                fits.append({"seq_len": t, **memory.as_dict()})
            except torch.OutOfMemoryError:
                first_oom = t
            torch.cuda.empty_cache()
            if first_oom is not None:
                break
        row = {
            **row_header("oom_boundary", name, env),
            "config": {
                **model_fields(entry),
                "setting": setting,
                "dense_fraction": fraction,
                "sink_size": entry.sink_size,
                "window_size": entry.window_size,
                "lengths_tried": list(entry.lengths),
                "n_query": entry.n_query,
                "n_target": entry.n_target,
                "device_total_bytes": total,
            },
            "fits": fits,
            "max_fitting_len": fits[-1]["seq_len"] if fits else None,
            "first_oom_len": first_oom,
        }
        label = setting + (f" {fraction:.1%} dense" if fraction is not None else "")
        ok = row["max_fitting_len"]
        print(f"{label:<20} longest that fit: {ok}, first out of memory: {first_oom}", flush=True)
        append_rows(results, [row])
        rows.append(row)
    return rows
