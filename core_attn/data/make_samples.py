"""Regenerate the synthetic sample datasets under core_attn/data/samples/ (deterministic).

    python -m core_attn.data.make_samples [--out DIR]

Four kinds mirror the paper's tasks (a few KB each): ``refcocog`` (image + box + referring
expression), ``mmlongbench`` (multi-page document + evidence pages), ``mmdocir`` (document +
evidence region) and ``vidstg`` (video frames + temporal segment + boxes). Images are flat shapes
drawn with PIL (no fonts, no randomness beyond a fixed seed), so a rerun reproduces the same pixels.
Record schema: see core_attn.analysis.data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
KINDS = ("refcocog", "mmlongbench", "mmdocir", "vidstg")

COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70), "orange": (245, 150, 30)}
PAGE_BG, INK, BG = (250, 250, 248), (120, 120, 120), (205, 210, 220)


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: list[int], color) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=color)
    else:  # triangle
        draw.polygon([(x0, y1 - 1), ((x0 + x1) // 2, y0), (x1 - 1, y1 - 1)], fill=color)


def _text_lines(draw: ImageDraw.ImageDraw, rng: random.Random, width: int, top: int, bottom: int) -> None:
    for y in range(top, bottom, 6):
        draw.rectangle((5, y, 5 + rng.randint(width // 2, width - 12), y + 2), fill=INK)


def _save(img: Image.Image, root: Path, rel: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return rel


def make_refcocog(root: Path, rng: random.Random) -> list[dict]:
    records = []
    layouts = [
        ("red", "square", "blue", "circle"),
        ("green", "triangle", "red", "circle"),
        ("blue", "square", "orange", "triangle"),
        ("orange", "circle", "green", "square"),
    ]
    for i, (c_target, s_target, c_other, s_other) in enumerate(layouts):
        w, h = 96, 72
        img = Image.new("RGB", (w, h), BG)
        draw = ImageDraw.Draw(img)
        size = rng.randint(18, 26)
        left = [rng.randint(4, 30), rng.randint(4, h - size - 4)]
        right = [rng.randint(52, w - size - 4), rng.randint(4, h - size - 4)]
        target_xy, other_xy = (left, right) if i % 2 == 0 else (right, left)
        box = [target_xy[0], target_xy[1], target_xy[0] + size, target_xy[1] + size]
        _shape(draw, s_other, [other_xy[0], other_xy[1], other_xy[0] + size, other_xy[1] + size], COLORS[c_other])
        _shape(draw, s_target, box, COLORS[c_target])
        side = "left" if target_xy is left else "right"
        records.append(
            {
                "id": f"refcocog-{i}",
                "image": _save(img, root, f"images/ref-{i}.png"),
                "bbox": box,
                "expression": f"the {c_target} {s_target} on the {side}",
                "question": f"Where is the {c_target} {s_target} on the {side}?",
                "answer": side,
            }
        )
    return records


def _page(rng: random.Random, figure: str | None = None, color: str = "blue") -> tuple[Image.Image, list[int] | None]:
    w, h = 60, 80
    img = Image.new("RGB", (w, h), PAGE_BG)
    draw = ImageDraw.Draw(img)
    _text_lines(draw, rng, w, 6, 30)
    box = None
    if figure == "chart":
        box = [8, 34, 52, 64]
        heights = [rng.randint(6, 24) for _ in range(4)]
        heights[1] = 28
        for j, bh in enumerate(heights):
            col = COLORS[color] if j == 1 else INK
            draw.rectangle((10 + j * 10, 63 - bh, 16 + j * 10, 63), fill=col)
    elif figure == "table":
        box = [6, 36, 54, 62]
        for r in range(4):
            for c in range(3):
                fill = COLORS[color] if (r, c) == (2, 1) else (225, 225, 225)
                draw.rectangle((7 + c * 16, 37 + r * 6, 21 + c * 16, 41 + r * 6), fill=fill)
    _text_lines(draw, rng, w, 68 if figure else 34, h - 4)
    return img, box


def make_mmlongbench(root: Path, rng: random.Random) -> list[dict]:
    specs = [(3, [1], "blue"), (3, [2], "green"), (4, [0, 3], "red")]
    records = []
    for i, (n_pages, evidence, color) in enumerate(specs):
        pages = []
        for p in range(n_pages):
            img, _ = _page(rng, "chart" if p in evidence else None, color)
            pages.append(_save(img, root, f"pages/doc-{i}-p{p}.png"))
        records.append(
            {
                "id": f"mmlongbench-{i}",
                "pages": pages,
                "evidence_pages": evidence,
                "question": "What color is the tallest bar in the chart?",
                "answer": color,
            }
        )
    return records


def make_mmdocir(root: Path, rng: random.Random) -> list[dict]:
    specs = [(2, 1, "table", "red"), (3, 0, "chart", "green"), (2, 0, "table", "blue")]
    records = []
    for i, (n_pages, evidence, figure, color) in enumerate(specs):
        pages, bbox = [], None
        for p in range(n_pages):
            img, box = _page(rng, figure if p == evidence else None, color)
            bbox = box if p == evidence else bbox
            pages.append(_save(img, root, f"pages/doc-{i}-p{p}.png"))
        records.append(
            {
                "id": f"mmdocir-{i}",
                "pages": pages,
                "evidence_page": evidence,
                "bbox": bbox,
                "question": f"Which color is highlighted in the {figure}?",
                "answer": color,
            }
        )
    return records


def make_vidstg(root: Path, rng: random.Random) -> list[dict]:
    specs = [("orange", "circle", [1, 2]), ("red", "square", [2, 3]), ("green", "triangle", [0, 1])]
    records = []
    for i, (color, shape, (first, last)) in enumerate(specs):
        w, h, size = 64, 48, 16
        x, y = rng.randint(2, 12), rng.randint(4, h - size - 4)
        frames, boxes = [], []
        for f in range(4):
            img = Image.new("RGB", (w, h), BG)
            draw = ImageDraw.Draw(img)
            draw.rectangle((0, h - 8, w - 1, h - 1), fill=(170, 175, 160))  # ground
            if first <= f <= last:
                box = [x + 12 * f, y, x + 12 * f + size, y + size]
                _shape(draw, shape, box, COLORS[color])
                boxes.append({"frame": f, "bbox": box})
            frames.append(_save(img, root, f"frames/vid-{i}-f{f}.png"))
        records.append(
            {
                "id": f"vidstg-{i}",
                "frames": frames,
                "fps": 2.0,
                "segment": [first, last],
                "boxes": boxes,
                "question": f"Where is the moving {color} {shape}?",
                "answer": f"frames {first}-{last}",
            }
        )
    return records


MAKERS = {"refcocog": make_refcocog, "mmlongbench": make_mmlongbench, "mmdocir": make_mmdocir, "vidstg": make_vidstg}


def make_samples(out: str | os.PathLike = SAMPLES_DIR, seed: int = 0) -> dict[str, Path]:
    """Write every kind to ``out/<kind>/records.jsonl`` plus its PNGs; returns kind -> records file."""
    written = {}
    for k, kind in enumerate(KINDS):
        root = Path(out) / kind
        root.mkdir(parents=True, exist_ok=True)
        records = MAKERS[kind](root, random.Random(seed * 1000 + k))
        path = root / "records.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        written[kind] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(SAMPLES_DIR), help="output folder (default: the packaged samples)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for kind, path in make_samples(args.out, args.seed).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
