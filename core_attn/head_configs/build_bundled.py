"""Regenerate the bundled head configs and their index entries.

    python core_attn/head_configs/build_bundled.py            # rewrite the bundled folders in place
    python core_attn/head_configs/build_bundled.py --out DIR  # write them elsewhere (for checking)

Only the tiny demo model is bundled: real models are never given scores that were not measured
(see README.md in this folder for the recipe that measures and publishes a real model).

The tiny model's ranking is a *planted-heads construction*, not a measurement: the tiny
Qwen3-VL of ``core_attn.testing.tiny_models`` has random weights, so it has no retrieval heads
to find. The construction, for its text decoder of L layers x HQ q_heads:

  * background: ``0.05 * torch.rand(L, HQ, generator=torch.Generator().manual_seed(0))``;
  * planted retrieval heads: PLANTED below overwrites three (layer, q_head) cells with
    0.6, 0.45 and 0.3 (one head per layer in layers 1-3; layer 0 has none).

The output is deterministic: running this again rewrites identical head_config.json and
head_scores.safetensors (README.md keeps any text written outside its generated block).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_FAMILY = "qwen3_vl"
TINY_MODEL_ID = f"tiny-{TINY_FAMILY}"  # the model_id `core-attn extract --tiny qwen3_vl` records
PLANTED = {(2, 1): 0.6, (3, 2): 0.45, (1, 3): 0.3}  # (layer, q_head) -> score
SEED = 0
SINK, WINDOW = 4, 16  # the tiny demo's streaming settings (48-token prompts)
COMMAND = "python core_attn/head_configs/build_bundled.py"


def planted_scores(num_layers: int, num_q_heads: int):
    """float32 [num_layers, num_q_heads]: seeded background in [0, 0.05) plus the PLANTED heads."""
    import torch

    scores = 0.05 * torch.rand(num_layers, num_q_heads, generator=torch.Generator().manual_seed(SEED))
    for (layer, q_head), value in PLANTED.items():
        scores[layer, q_head] = value
    return scores


def tiny_head_config():
    """The planted-heads HeadConfig of the tiny Qwen3-VL (shape read from its config class)."""
    from core_attn import HeadConfig
    from core_attn.testing.tiny_models import tiny_config

    text = tiny_config(TINY_FAMILY).get_text_config(decoder=True)
    layers, hq, hkv = text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads
    planted = ", ".join(f"L{l}H{h}={v}" for (l, h), v in sorted(PLANTED.items()))
    return HeadConfig.from_scores(
        planted_scores(layers, hq),
        num_kv_heads=hkv,
        model_id=TINY_MODEL_ID,
        sink_size=SINK,
        window_size=WINDOW,
        metric="planted",
        provenance={
            "command": COMMAND,
            "method": "planted",
            "measured": False,
            "construction": f"0.05 * torch.rand(L, HQ) with torch.Generator().manual_seed({SEED}), "
            f"then planted heads {planted}",
            "model": f"core_attn.testing.tiny_models.build_tiny_model({TINY_FAMILY!r}) (random weights)",
        },
    )


def index_entry() -> dict:
    return {
        "path": TINY_MODEL_ID,
        "method": "planted",
        "how": "Synthetic planted-heads scores for the random-weight tiny Qwen3-VL used by tests and "
        f"`core-attn demo`; not measured. Regenerate with: {COMMAND}",
    }


def build(out: Path) -> list[Path]:
    """Write the bundled folders and merge their entries into out/index.json; return the folders."""
    from core_attn.heads.hub import write_hub_folder

    folder = out / TINY_MODEL_ID
    write_hub_folder(tiny_head_config(), folder, reference=None, top_k=8)
    for f in folder.iterdir():  # package data must be world-readable (safetensors writes 0600)
        f.chmod(0o644)
    index_file = out / "index.json"
    index = {"format_version": "1.0", "models": {}}
    if index_file.is_file():
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
    index["models"][TINY_MODEL_ID] = index_entry()
    with open(index_file, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    return [folder]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="target folder (default: this folder)")
    args = parser.parse_args(argv)
    for folder in build(args.out):
        print(f"wrote {os.path.relpath(folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
