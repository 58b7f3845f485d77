"""`core-attn demo`: hybrid prefill on a built-in tiny multimodal model, compared with sdpa."""

from __future__ import annotations

import argparse
import tempfile
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run hybrid prefill on a built-in tiny model and compare with sdpa (the default command)",
        description="Builds a tiny random-weight multimodal model, measures which heads retrieve the image, "
        "attaches that head ranking and runs hybrid prefill next to sdpa. Runs offline on a CPU in seconds.",
    )
    p.add_argument("--family", default="qwen3_vl", help="tiny model family (default: qwen3_vl)")
    p.add_argument("--dense", type=float, default=0.25, help="fraction of heads kept dense (default: 0.25)")
    p.add_argument("--sink", type=int, default=4, help="sink tokens of streaming heads (default: 4)")
    p.add_argument("--window", type=int, default=16, help="window of streaming heads (default: 16)")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens to generate (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _layer_map(mask) -> list[str]:
    """One line per layer: D for a dense q_head, . for a streaming one."""
    return [f"    L{l:<3d}" + " ".join("D" if d else "." for d in row.tolist()) for l, row in enumerate(mask)]


def _pairs(tq: int, sink: int, window: int) -> int:
    """(query, key) pairs a streaming head attends in a causal prefill of tq tokens."""
    return sum(min(p + 1, min(sink, p + 1) + min(window, max(0, p + 1 - sink))) for p in range(tq))


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText

    import core_attn
    from core_attn.testing import tiny_models

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    print(f"core-attn {core_attn.__version__} demo: tiny random-weight {args.family} model, CPU, offline\n")
    model = tiny_models.build_tiny_model(args.family, seed=args.seed, attn_implementation="sdpa")
    layers, hq, hkv = core_attn.hf.model_head_shape(model)
    planted = _plant(model, layers, hq)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        hybrid = AutoModelForImageTextToText.from_pretrained(tmp, attn_implementation="core_hybrid").eval()
    sample = tiny_models.make_inputs(args.family, model.config, batch_size=1, text_len=48, seed=args.seed, model=model)
    inputs = sample.model_inputs
    # The evidence: two tokens right after the image, past the sinks and far outside the window
    # of the last question tokens; the question follows them.
    start, end = sample.image_token_spans[0]
    e0, (q0, q1) = end + 1, sample.question_spans[0]
    inputs["input_ids"][0, e0 : e0 + 2] = planted.target_token_id
    q0 = e0 + 2
    tq = int(inputs["input_ids"].shape[1])
    print(f"model   : {layers} layers x {hq} q_heads ({hkv} kv_heads), vision tower on sdpa")
    print(f"input   : {tq} tokens: image {start}..{end - 1}, evidence {e0}..{e0 + 1}, question {q0}..{q1 - 1}\n")

    from core_attn.analysis import measure_ram
    from core_attn.ops import cpu_kernel

    ram = measure_ram(model, inputs, torch.arange(q0, q1), planted.target_index(inputs["input_ids"])).ram
    config = core_attn.HeadConfig.from_scores(ram, num_kv_heads=hkv, model_id=f"tiny-{args.family}")
    found = config.top_heads(len(planted.labels))
    print("1. Retrieval Attention Mass (RAM) of every head, query = question tokens, target = evidence tokens")
    print(f"   planted retrieval heads : {', '.join(sorted(planted.labels))}")
    top = config.ranking()[: len(found)]
    print(f"   RAM top {len(found)}              : "
          + ", ".join(f"{core_attn.head_label(int(l), int(h))} ({float(ram[l, h]):.2f})" for l, h in top))
    print(f"   recovered exactly: {sorted(found) == sorted(planted.labels)}\n")

    mask = core_attn.attach(hybrid, config, dense=args.dense, sink_size=args.sink, window_size=args.window)
    n_dense = int(mask.sum())
    print(f"2. attach(dense={args.dense}, sink={args.sink}, window={args.window}): "
          f"{n_dense}/{mask.numel()} heads dense, the rest streaming")
    print("\n".join(_layer_map(mask)) + "\n")

    reversed_config = core_attn.HeadConfig.from_scores(-ram, num_kv_heads=hkv)
    # The fused CPU kernel compiles on first use (once per machine, then cached): do it here,
    # outside the timed prefills.
    if cpu_kernel.enabled() and cpu_kernel._state["loaded"] is None:
        print("   (loading the fused CPU streaming kernel; the first run on a machine compiles it, about 13 s on 2 cores)\n", flush=True)
    cpu_kernel.available()
    with torch.no_grad():
        t0 = time.perf_counter()
        ref = model(**inputs).logits[0, -1].float()
        t_ref = time.perf_counter() - t0
        calls = cpu_kernel.calls()
        t0 = time.perf_counter()
        hyb = hybrid(**inputs).logits[0, -1].float()
        t_hyb = time.perf_counter() - t0
        fused = cpu_kernel.calls() > calls
        core_attn.attach(hybrid, config, dense=1.0)
        exact = hybrid(**inputs).logits[0, -1].float()
        core_attn.attach(hybrid, reversed_config, dense=args.dense, sink_size=args.sink, window_size=args.window)
        wrong = hybrid(**inputs).logits[0, -1].float()
        core_attn.attach(hybrid, config, dense=args.dense, sink_size=args.sink, window_size=args.window)
    full = tq * (tq + 1) // 2
    attended = n_dense * full + (mask.numel() - n_dense) * _pairs(tq, args.sink, args.window)
    print("3. prefill, last-token logits against sdpa")
    print(f"   all heads dense            : max |diff| = {(exact - ref).abs().max().item():.2e} (must be exact)")
    print(f"   hybrid, RAM ranking        : max |diff| = {(hyb - ref).abs().max().item():.2e}, "
          f"same next token: {bool(hyb.argmax() == ref.argmax())}")
    print(f"   hybrid, reversed ranking   : max |diff| = {(wrong - ref).abs().max().item():.2e}, "
          f"same next token: {bool(wrong.argmax() == ref.argmax())} (retrieval heads streamed)")
    print(f"   attended (q, k) pairs      : {attended / (full * mask.numel()):.1%} of full causal attention")
    print(f"   streaming heads ran on     : {'the fused C++ CPU kernel' if fused else 'the SDPA composition'}")
    print(f"   time (tiny model, not a benchmark): sdpa {t_ref * 1e3:.1f} ms, hybrid {t_hyb * 1e3:.1f} ms\n")

    gen = dict(max_new_tokens=args.new_tokens, do_sample=False)
    with torch.no_grad():
        a = model.generate(**inputs, **gen)[0, tq:].tolist()
        b = hybrid.generate(**inputs, **gen)[0, tq:].tolist()
    print(f"4. generate({args.new_tokens}): hybrid prefill + exact decode")
    print(f"   sdpa  : {a}\n   hybrid: {b}")
    agree = sum(x == y for x, y in zip(a, b))
    print(f"   {agree}/{len(a)} tokens agree (a random-weight model; on real checkpoints see the benchmarks)")
    return 0


def _plant(model, layers: int, hq: int):
    """Plant three retrieval heads past the first layer (see core_attn.analysis.planted)."""
    from core_attn.analysis import plant_retrieval_heads

    labels = [f"L{1 + i % (layers - 1)}H{(3 * i + 1) % hq}" for i in range(3)]
    return plant_retrieval_heads(model, labels, target_token_id=470)
