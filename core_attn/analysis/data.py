"""Dataset adapters: records of the paper's four tasks -> model inputs + query / target token indices.

Record kinds (JSON lines; paths relative to the JSONL file's folder; indices 0-based unless
``index_base=1`` is given; boxes ``[x0, y0, x1, y1]`` in pixels, or ``"bbox_format": "xywh"``):

- ``refcocog``    image + referring expression + box: ``{"id", "image", "bbox", "expression"[, "question"]}``
- ``mmlongbench`` multi-page document + evidence pages: ``{"id", "pages": [...], "evidence_pages": [...], "question"}``
- ``mmdocir``     document + evidence region: ``{"id", "pages", "evidence_page", "bbox", "question"}``
- ``vidstg``      video frames + temporal segment + boxes: ``{"id", "frames": [...], "fps",
  "segment": [first, last] (inclusive frame indices), "boxes": [{"frame", "bbox"}, ...], "question"}``

Every record may carry ``"answer"``. Images may be paths, PIL images or ``{"bytes"|"path"}`` dicts
(as ``datasets`` image columns give them).

Query tokens are the question's tokens, found with query markers (core_attn.analysis.tokens).
Target tokens: refcocog / mmdocir: the box on its image / page; mmlongbench: the evidence pages
(Qwen-VL: marker-tagged pages, cross-checked against the grid; LLaVA / InternVL: per-image slices);
vidstg: the box of every segment frame (whole frames where a segment frame has no box).

:class:`SampleBuilder` drives a processor: the model's own (``SampleBuilder.from_pretrained``,
AutoProcessor) or the offline :class:`core_attn.data.tiny_processor.TinyProcessor` for the tiny
random-weight test models (``SampleBuilder.for_tiny``).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import tokens as tk

KINDS = ("refcocog", "mmlongbench", "mmdocir", "vidstg")
RECORDS_FILE = "records.jsonl"


# ----------------------------------------------------------------------------- records
@dataclass
class Record:
    """One parsed record. ``images`` are the image, the pages or the video frames (PIL, RGB)."""

    kind: str
    id: str
    question: str
    images: list = field(repr=False)
    is_video: bool = False
    target_images: list[int] = field(default_factory=list)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    target_frames: list[int] = field(default_factory=list)
    frame_boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    fps: float | None = None
    answer: str | None = None


def _open_image(value, root: Path):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
        value = value.get("path")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value) if Path(value).is_absolute() else root / value
        if not path.is_file():
            raise FileNotFoundError(f"image {value!r} not found (looked for {path})")
        with Image.open(path) as im:
            return im.convert("RGB")
    raise TypeError(f"expected an image path, PIL image or {{'bytes'|'path'}} dict, found {type(value).__name__}")


def _box(value, fmt: str = "xyxy") -> tuple[float, float, float, float]:
    if isinstance(value, str):
        value = json.loads(value)
    if value is None or len(value) != 4:
        raise ValueError(f"expected a box of 4 numbers, found {value!r}")
    x0, y0, a, b = (float(v) for v in value)
    if fmt == "xywh":
        return (x0, y0, x0 + a, y0 + b)
    if fmt != "xyxy":
        raise ValueError(f"bbox_format must be 'xyxy' or 'xywh', found {fmt!r}")
    return (x0, y0, a, b)


def _indices(value, base: int) -> list[int]:
    if isinstance(value, str):  # MMLongBench-Doc stores e.g. "[3, 5]"
        value = json.loads(value)
    if isinstance(value, (int, float)):
        value = [value]
    return [int(v) - base for v in value]


def infer_kind(row: Mapping) -> str:
    """The record kind from its keys (see the module docstring)."""
    if "frames" in row:
        return "vidstg"
    if "evidence_pages" in row:
        return "mmlongbench"
    if "pages" in row and "evidence_page" in row:
        return "mmdocir"
    if "image" in row and "bbox" in row:
        return "refcocog"
    raise ValueError(f"cannot tell the record kind from keys {sorted(row)}; expected one of {KINDS}")


def parse_record(
    row: Mapping, kind: str | None = None, *, root: str | os.PathLike = ".", index_base: int = 0
) -> Record:
    """Turn one raw row into a :class:`Record`; ``root`` resolves relative image paths."""
    kind = kind or infer_kind(row)
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    root, fmt = Path(root), row.get("bbox_format") or "xyxy"
    rid, answer = str(row.get("id", "")), row.get("answer")
    answer = None if answer is None else str(answer)
    if kind == "refcocog":
        question = row.get("question") or f"Locate {row['expression']}."
        return Record(
            kind, rid, question, [_open_image(row["image"], root)], boxes={0: _box(row["bbox"], fmt)}, answer=answer
        )
    if kind in ("mmlongbench", "mmdocir"):
        pages = [_open_image(p, root) for p in row["pages"]]
        if kind == "mmlongbench":
            targets = _indices(row["evidence_pages"], index_base)
            boxes = {}
        else:
            targets, boxes = [], {_indices(row["evidence_page"], index_base)[0]: _box(row["bbox"], fmt)}
        bad = [i for i in [*targets, *boxes] if not 0 <= i < len(pages)]
        if bad or not (targets or boxes):
            raise ValueError(f"record {rid!r}: evidence page(s) {bad or targets} not in 0..{len(pages) - 1}")
        return Record(kind, rid, row["question"], pages, target_images=targets, boxes=boxes, answer=answer)
    frames = [_open_image(p, root) for p in row["frames"]]
    first, last = (int(v) - index_base for v in row["segment"])
    if not 0 <= first <= last < len(frames):
        raise ValueError(f"record {rid!r}: segment [{first}, {last}] is not within 0..{len(frames) - 1}")
    raw = row.get("boxes") or []
    pairs = raw.items() if isinstance(raw, Mapping) else ((b["frame"], b["bbox"]) for b in raw)
    boxes = {int(f) - index_base: _box(b, fmt) for f, b in pairs if b is not None}
    boxes = {f: b for f, b in boxes.items() if first <= f <= last}
    whole = [f for f in range(first, last + 1) if f not in boxes]
    return Record(
        kind,
        rid,
        row["question"],
        frames,
        is_video=True,
        target_frames=whole,
        frame_boxes=boxes,
        fps=float(row.get("fps") or 1.0),
        answer=answer,
    )


def load_records(
    source: str | os.PathLike,
    kind: str | None = None,
    *,
    split: str = "train",
    limit: int | None = None,
    column_map: Mapping[str, str] | None = None,
    index_base: int = 0,
    cache_dir: str | None = None,
) -> list[Record]:
    """Load records with ``datasets``: a folder holding records.jsonl, a .jsonl file, a local dataset
    folder (parquet, ...) or a Hub dataset id.

    Args:
        kind: record kind (inferred from the keys when None).
        column_map: dataset column -> our field name (e.g. ``{"doc_pages": "pages"}``).
        index_base: 1 when page / frame indices in the data are 1-based (MMLongBench-Doc).
    """
    import datasets

    path = Path(source)
    if path.is_dir() and (path / RECORDS_FILE).is_file():
        path = path / RECORDS_FILE
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise FileNotFoundError(f"no records file at {path}")
        ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
        root = path.parent
    else:  # a Hub dataset id, or a local dataset folder (parquet, ...) that datasets recognises
        ds = datasets.load_dataset(str(source), split=split, cache_dir=cache_dir)
        root = path if path.is_dir() else Path(".")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    records = []
    for row in ds:
        if column_map:
            row = {column_map.get(k, k): v for k, v in row.items()}
        records.append(parse_record(row, kind, root=root, index_base=index_base))
    return records


# ---------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """Model inputs of one record plus the token positions RAM needs.

    inputs: the processor's tensors for a batch of one (``input_ids`` [1, T], ...), markers removed.
    query_index: long [Q] positions of the question tokens. target_index: long [K] positions of the
    ground-truth visual tokens. visual_index: long [V] every image / video token position.
    task: the name RAM statistics are filed under (None: the record kind).
    """

    record: Record
    inputs: dict = field(repr=False)
    query_index: torch.Tensor
    target_index: torch.Tensor
    visual_index: torch.Tensor
    layout: tk.VisualLayout = field(repr=False)
    task: str | None = None  # name the scores are filed under (default: the record kind)

    @property
    def seq_len(self) -> int:
        return int(self.inputs["input_ids"].shape[-1])


def family_of(config) -> str:
    """Family name (tokens.FAMILIES) of a transformers config, from its model_type."""
    model_type = getattr(config, "model_type", None)
    if model_type not in tk.FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r}; expected one of {tk.FAMILIES}")
    return model_type


def build_messages(record: Record, *, mark_pages: bool, markers: Mapping[str, tuple[str, str]]) -> list[dict]:
    """One user turn: the images / pages (target pages wrapped in target markers when ``mark_pages``) or
    the video, then the question wrapped in query markers."""
    t_open, t_close = markers["target"]
    q_open, q_close = markers["query"]
    content: list[dict] = []
    if record.is_video:
        content.append({"type": "video"})
    else:
        for i in range(len(record.images)):
            marked = mark_pages and i in record.target_images
            if marked:
                content.append({"type": "text", "text": t_open})
            content.append({"type": "image"})
            if marked:
                content.append({"type": "text", "text": t_close})
    content.append({"type": "text", "text": f"{q_open}{record.question}{q_close}"})
    return [{"role": "user", "content": content}]


def _cfg(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


class SampleBuilder:
    """Turns records into :class:`Sample` s for one model family with a processor.

    The processor needs ``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``,
    ``__call__(text=[...], images=..., videos=..., return_tensors="pt")`` and ``.tokenizer``.
    Marker strings are registered on its tokenizer as special tokens (stripped before any forward).
    """

    MARKERS = {"target": tk.DEFAULT_TARGET_MARKERS, "query": tk.DEFAULT_QUERY_MARKERS}

    def __init__(self, family: str, config, processor):
        tk.family_style(family)
        self.family, self.config, self.processor = family, config, processor
        tk.add_marker_tokens(processor, [m for pair in self.MARKERS.values() for m in pair])

    @classmethod
    def from_pretrained(cls, model_id: str, **processor_kwargs) -> SampleBuilder:
        """Model config + processor of a checkpoint (AutoConfig / AutoProcessor)."""
        from transformers import AutoConfig, AutoProcessor

        config = AutoConfig.from_pretrained(model_id)
        return cls(family_of(config), config, AutoProcessor.from_pretrained(model_id, **processor_kwargs))

    @classmethod
    def for_tiny(cls, config, family: str | None = None, **processor_kwargs) -> SampleBuilder:
        """Offline builder for a tiny random-weight model's config (no processor download)."""
        from ..data.tiny_processor import TinyProcessor

        family = family or family_of(config)
        return cls(family, config, TinyProcessor(family, config, **processor_kwargs))

    # ------------------------------------------------------------------ encoding
    def _video_kwargs(self, record: Record) -> dict:
        if getattr(self.processor, "is_tiny", False):
            return {"fps": record.fps}
        from transformers.video_utils import VideoMetadata

        n = len(record.images)
        meta = VideoMetadata(total_num_frames=n, fps=record.fps, frames_indices=list(range(n)))
        return {"video_metadata": [meta], "do_sample_frames": False}

    def encode(self, record: Record) -> tuple[dict, dict[str, list[tuple[int, int]]]]:
        """Processor output for the record with markers removed, and the marked spans."""
        style = tk.family_style(self.family)
        mark_pages = style == "qwen" and bool(record.target_images)
        messages = build_messages(record, mark_pages=mark_pages, markers=self.MARKERS)
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        kwargs = {"text": [prompt], "return_tensors": "pt"}
        if record.is_video:
            kwargs.update(videos=[record.images], **self._video_kwargs(record))
        else:
            kwargs["images"] = record.images
        enc = self.processor(**kwargs)
        expected = {"query": 1, "target": len(record.target_images) if mark_pages else 0}
        marked = tk.strip_markers(dict(enc), self.processor, self.MARKERS, expected=expected)
        return marked.inputs, marked.spans

    def layout(self, inputs: Mapping, record: Record) -> tk.VisualLayout:
        """What :func:`tokens.target_indices` needs, from the processor output and the model config."""
        cfg, style = self.config, tk.family_style(self.family)
        sizes = [im.size for im in record.images]
        common = dict(
            image_token_id=int(_cfg(cfg, "image_token_id", "image_token_index")),
            video_token_id=_cfg(cfg, "video_token_id", "video_token_index"),
            image_sizes=[] if record.is_video else sizes,
            frame_size=sizes[0] if record.is_video else None,
        )
        vision = cfg.vision_config
        if style == "qwen":
            return tk.VisualLayout(
                **common,
                image_grid_thw=inputs.get("image_grid_thw"),
                video_grid_thw=inputs.get("video_grid_thw"),
                merge_size=int(_cfg(vision, "spatial_merge_size", default=2)),
                temporal_patch_size=int(_cfg(vision, "temporal_patch_size", default=2)),
            )
        if style == "llava":
            base = int(vision.image_size) // int(vision.patch_size)
            return tk.VisualLayout(
                **common, base_grid=base, pooled_grid=math.ceil(base / 2), multi_image=len(sizes) > 1
            )
        return self._internvl_layout(inputs, common)

    def _internvl_layout(self, inputs: Mapping, common: dict) -> tk.VisualLayout:
        tok = getattr(self.processor, "tokenizer", self.processor)
        n = int(_cfg(self.processor, "image_seq_length", default=_cfg(self.config, "image_seq_length", default=256)))
        if common["frame_size"] is not None:  # video: one tile per frame
            return tk.VisualLayout(**common, num_image_token=n, thumbnail=False)
        counts = tk.internvl_tile_counts(
            inputs["input_ids"],
            context_token_id=common["image_token_id"],
            start_token_id=tok.convert_tokens_to_ids("<img>"),
            end_token_id=tok.convert_tokens_to_ids("</img>"),
            num_image_token=n,
        )
        if len(counts) != len(common["image_sizes"]):
            raise ValueError(f"input_ids hold {len(counts)} image blocks for {len(common['image_sizes'])} images")
        # InternVLProcessor crops to tiles by default; an image that came out as one tile was not cropped.
        grids = [
            internvl_tile_grid(self.processor.image_processor, size) if c > 1 else (1, 1)
            for size, c in zip(common["image_sizes"], counts, strict=True)
        ]
        thumb = bool(_cfg(self.processor.image_processor, "use_thumbnail", default=True))
        for i, ((rows, cols), c) in enumerate(zip(grids, counts, strict=True)):
            want = rows * cols + (1 if thumb and rows * cols > 1 else 0)
            if want != c:
                raise ValueError(f"image {i}: tile layout {rows}x{cols} implies {want} tiles, input_ids hold {c}")
        return tk.VisualLayout(**common, tile_counts=counts, tile_grids=grids, num_image_token=n, thumbnail=thumb)

    # ------------------------------------------------------------------- targets
    def build(self, record: Record) -> Sample:
        """Inputs, query and target indices of one record (raises ValueError when a target is empty)."""
        inputs, spans = self.encode(record)
        layout = self.layout(inputs, record)
        ids = inputs["input_ids"]
        n_frames = len(record.images) if record.is_video else None
        target = tk.target_indices(
            self.family,
            ids,
            layout,
            images=record.target_images,
            boxes=record.boxes,
            frames=record.target_frames,
            frame_boxes=record.frame_boxes,
            num_frames=n_frames,
        )
        visual_token = (
            layout.video_token_id
            if record.is_video and tk.family_style(self.family) != "internvl"
            else layout.image_token_id
        )
        visual = tk.token_positions(ids, visual_token)
        if spans.get("target"):  # Qwen pages: marker spans, restricted to visual tokens, must agree with the grid
            marked = tk.as_index(spans["target"])
            marked = marked[torch.isin(marked, visual)]
            pages = tk.target_indices(self.family, ids, layout, images=record.target_images)
            if not torch.equal(marked, pages):
                raise ValueError(
                    f"record {record.id!r}: marked pages cover {len(marked)} visual tokens, the grid says {len(pages)}"
                )
        query = tk.as_index(spans["query"])
        if len(target) == 0 or len(query) == 0:
            raise ValueError(f"record {record.id!r}: found {len(query)} query and {len(target)} target tokens")
        return Sample(record, inputs, query, target, visual, layout)

    __call__ = build

    def samples(self, records: Iterable[Record]) -> Iterator[Sample]:
        for record in records:
            yield self.build(record)


def internvl_tile_grid(image_processor, image_size: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) tile layout the InternVL / GotOcr2 image processor picks when cropping an image of (width, height).

    Calls transformers' own ``get_optimal_tiled_canvas`` with the processor's tile size and tile bounds.
    """
    try:
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas
    except ImportError:  # older transformers
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    width, height = image_size
    size = image_processor.size
    tile = (size["height"], size["width"]) if isinstance(size, Mapping) else (size.height, size.width)
    lo, hi = int(getattr(image_processor, "min_patches", 1)), int(getattr(image_processor, "max_patches", 12))
    cols, rows = get_optimal_tiled_canvas((height, width), tile, lo, hi)
    return int(rows), int(cols)
