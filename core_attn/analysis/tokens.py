"""Target tokens: which positions of ``input_ids`` hold the ground-truth visual evidence.

Pure functions over what a processor returns (``input_ids``, ``image_grid_thw``, tile counts,
original image sizes); nothing here runs a processor or a model. Conventions:

- ``input_ids`` is a long tensor [T] or [1, T] (one sequence); returned indices are long [K],
  sorted and unique, positions in that sequence.
- Images are sized ``(width, height)`` in pixels (PIL order); boxes are ``(x0, y0, x1, y1)`` in
  the same pixels, x1/y1 exclusive edges. Grids are ``(rows, cols)``.
- A box covers every grid cell it touches: floor for the top-left, ceil for the bottom-right,
  clipped to the grid, at least one cell; cells are flattened row-major.

Families (paper, appendix C):
- Qwen-VL (qwen2_vl, qwen2_5_vl, qwen3_vl): one token per merged ``merge x merge`` patch block,
  row-major over the merged grid ``(h / merge, w / merge)`` of ``image_grid_thw``; a video has
  ``t`` temporal groups (``temporal_patch_size`` frames each) of ``h * w / merge**2`` tokens.
- LLaVA-OneVision: each image / frame expands to the same number of tokens (uniform slices); the
  base-resolution features (e.g. 27 x 27) come first in an image's slice.
- InternVL: each image is a variable number of tiles of ``num_image_token`` tokens (cumulative
  slices); tiles are row-major over the tile layout, followed by a thumbnail tile.
- Pages / frames / text regions of any family can also be marked in the prompt with marker
  strings (:func:`strip_markers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
FAMILIES = (*QWEN_FAMILIES, "llava_onevision", "internvl")

DEFAULT_TARGET_MARKERS = ("<|core_target|>", "<|/core_target|>")
DEFAULT_QUERY_MARKERS = ("<|core_query|>", "<|/core_query|>")
# Keys of a processor output that are per-token sequences [1, T] (stripped with the markers).
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "position_ids")


# ---------------------------------------------------------------------------- basics
def _ids_1d(input_ids) -> torch.Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"expected one sequence, input_ids [1, T] or [T]; found batch of {ids.shape[0]}")
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"expected input_ids [T] or [1, T], found shape {tuple(ids.shape)}")
    return ids.long()


def token_positions(input_ids, token_id: int) -> torch.Tensor:
    """Positions (long [N]) of ``token_id`` in ``input_ids`` [T] or [1, T]."""
    return (_ids_1d(input_ids) == int(token_id)).nonzero().flatten()


def as_index(parts: Iterable) -> torch.Tensor:
    """Union of index tensors / int lists / ``(start, end)`` spans as sorted unique long [K]."""
    chunks = []
    for p in parts:
        if isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, int) for v in p):
            p = torch.arange(p[0], p[1])
        chunks.append(torch.as_tensor(p, dtype=torch.long).flatten())
    if not chunks:
        return torch.zeros(0, dtype=torch.long)
    return torch.unique(torch.cat(chunks))


def cumulative_slices(positions: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
    """Split ``positions`` [N] into consecutive pieces of ``counts[i]`` entries (sum must be N)."""
    counts = [int(c) for c in counts]
    if sum(counts) != len(positions):
        raise ValueError(f"token counts {counts} sum to {sum(counts)}, but input_ids hold {len(positions)} such tokens")
    return list(torch.split(positions, counts))


def uniform_slices(positions: torch.Tensor, num_items: int, *, trailing: int = 0) -> list[torch.Tensor]:
    """Split ``positions`` [N] evenly into ``num_items`` pieces after dropping ``trailing`` ones at the end.

    Raises ValueError when ``N - trailing`` is not a multiple of ``num_items``.
    """
    n = len(positions) - int(trailing)
    if num_items < 1 or n < 0 or n % num_items != 0:
        raise ValueError(
            f"cannot split {len(positions)} visual tokens ({trailing} trailing) evenly into {num_items} items: "
            "expected a multiple of the item count"
        )
    return list(torch.split(positions[:n], n // num_items))


def box_to_cells(bbox: Sequence[float], image_size: Sequence[int], grid: Sequence[int]) -> tuple[int, int, int, int]:
    """Grid cells a pixel box touches: half-open ``(row0, row1, col0, col1)``.

    Args:
        bbox: ``(x0, y0, x1, y1)`` in pixels of an image of ``image_size = (width, height)``.
        grid: ``(rows, cols)`` laid uniformly over the image.
    Floor for the top-left, ceil for the bottom-right (exact rational arithmetic), clipped to the
    grid; a box of zero width or height still covers the cell it lies in.
    """
    if len(bbox) != 4:
        raise ValueError(f"bbox must be (x0, y0, x1, y1), found {len(bbox)} values: {bbox!r}")
    width, height = (int(v) for v in image_size)
    rows, cols = (int(v) for v in grid)
    if width <= 0 or height <= 0 or rows <= 0 or cols <= 0:
        raise ValueError(f"image_size and grid must be positive, found image_size={image_size}, grid={grid}")
    if not all(math.isfinite(float(v)) for v in bbox):
        raise ValueError(f"bbox must be finite, found {tuple(bbox)}")
    x0, y0, x1, y1 = (Fraction(v) if isinstance(v, int) else Fraction(float(v)) for v in bbox)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"bbox must have x0 <= x1 and y0 <= y1, found {tuple(bbox)}")
    if x1 < 0 or y1 < 0 or x0 > width or y0 > height:
        raise ValueError(f"bbox {tuple(bbox)} lies outside the {width}x{height} image")

    def span(lo: Fraction, hi: Fraction, extent: int, n: int) -> tuple[int, int]:
        a = min(max(math.floor(lo * n / extent), 0), n - 1)
        b = min(max(math.ceil(hi * n / extent), 0), n)
        return a, max(b, a + 1)

    r0, r1 = span(y0, y1, height, rows)
    c0, c1 = span(x0, x1, width, cols)
    return r0, r1, c0, c1


def cells_to_index(cells: tuple[int, int, int, int], cols: int, offset: int = 0) -> torch.Tensor:
    """Row-major indices (long [K]) of the cells ``(row0, row1, col0, col1)`` of a grid ``cols`` wide, plus offset."""
    r0, r1, c0, c1 = cells
    rows = torch.arange(r0, r1).view(-1, 1)
    return (offset + rows * cols + torch.arange(c0, c1).view(1, -1)).flatten()


# --------------------------------------------------------------------------- Qwen-VL
def _grid_rows(grid_thw, what: str) -> torch.Tensor:
    g = torch.as_tensor(grid_thw, dtype=torch.long)
    if g.dim() == 1:
        g = g.view(1, -1)
    if g.dim() != 2 or g.shape[1] != 3:
        raise ValueError(f"{what} must be [N, 3] rows of (t, h, w), found shape {tuple(g.shape)}")
    return g


def qwen_merged_grid(grid_thw: Sequence[int], merge_size: int = 2) -> tuple[int, int]:
    """(rows, cols) of merged tokens for one ``(t, h, w)`` patch grid."""
    _, h, w = (int(v) for v in grid_thw)
    if h % merge_size or w % merge_size:
        raise ValueError(f"patch grid {h}x{w} is not divisible by merge_size {merge_size}")
    return h // merge_size, w // merge_size


def qwen_image_slices(input_ids, image_grid_thw, *, image_token_id: int, merge_size: int = 2) -> list[torch.Tensor]:
    """Positions (long [n_i]) of each image's tokens; ``image_grid_thw`` [N, 3] as the processor returns it."""
    grids = _grid_rows(image_grid_thw, "image_grid_thw")
    counts = [int(g.prod()) // merge_size**2 for g in grids]
    return cumulative_slices(token_positions(input_ids, image_token_id), counts)


def qwen_video_group_slices(
    input_ids, video_grid_thw, *, video_token_id: int, merge_size: int = 2, video_index: int = 0
) -> list[torch.Tensor]:
    """Positions of each temporal group of one video: ``t`` tensors of ``h * w / merge**2`` positions.

    Taken from the video-token positions themselves, so text between groups (Qwen3-VL's
    ``<t seconds>`` timestamps) is skipped rather than assumed absent.
    """
    grids = _grid_rows(video_grid_thw, "video_grid_thw")
    counts = [int(g.prod()) // merge_size**2 for g in grids]
    video = cumulative_slices(token_positions(input_ids, video_token_id), counts)[video_index]
    t = int(grids[video_index][0])
    return uniform_slices(video, t)


def qwen_frame_groups(frames: Iterable[int], temporal_patch_size: int = 2) -> list[int]:
    """Temporal groups (sorted unique) holding the given sampled-frame indices."""
    return sorted({int(f) // temporal_patch_size for f in frames})


def qwen_bbox_indices(
    bbox: Sequence[float], *, image_size: Sequence[int], grid_thw: Sequence[int], image_start: int, merge_size: int = 2
) -> torch.Tensor:
    """Token positions (long [K]) of the merged tokens a box covers.

    Args:
        bbox: ``(x0, y0, x1, y1)`` in pixels of the image of ``image_size = (width, height)``: the
            original image, or the resized one (``(w * patch, h * patch)``) for boxes in resized
            coordinates, or ``(1000, 1000)`` for Qwen's 0-1000 relative boxes.
        grid_thw: the image's ``(t, h, w)`` row of ``image_grid_thw`` (patches).
        image_start: position of the image's first image-pad token in input_ids.
    The patch size cancels out: projecting onto patches and dividing by ``merge_size`` (floor /
    ceil) equals projecting straight onto the merged grid.
    """
    rows, cols = qwen_merged_grid(grid_thw, merge_size)
    return cells_to_index(box_to_cells(bbox, image_size, (rows, cols)), cols, image_start)


# ------------------------------------------------------------------- LLaVA-OneVision
def llava_base_bbox_indices(
    bbox: Sequence[float], *, image_size: Sequence[int], grid: int, image_start: int, pad_to_square: bool = False
) -> torch.Tensor:
    """Positions of the base-resolution features (``grid x grid``, row-major, first in the image's slice) a box covers.

    ``pad_to_square`` mirrors the multi-image path, where the image is centred on a square canvas
    before resizing; the single-image (anyres) base image is a plain resize.
    """
    width, height = (int(v) for v in image_size)
    x0, y0, x1, y1 = bbox
    if pad_to_square and width != height:
        side = max(width, height)
        dx, dy = (side - width) // 2, (side - height) // 2
        x0, y0, x1, y1, width, height = x0 + dx, y0 + dy, x1 + dx, y1 + dy, side, side
    return cells_to_index(box_to_cells((x0, y0, x1, y1), (width, height), (grid, grid)), grid, image_start)


# --------------------------------------------------------------------------- InternVL
def internvl_tile_counts(
    input_ids, *, context_token_id: int, start_token_id: int, end_token_id: int, num_image_token: int = 256
) -> list[int]:
    """Tiles per image, read from ``<img> ctx*n </img>`` blocks (InternVLProcessor drops ``num_patches``)."""
    ids = _ids_1d(input_ids)
    starts = token_positions(ids, start_token_id).tolist()
    ends = token_positions(ids, end_token_id).tolist()
    if len(starts) != len(ends):
        raise ValueError(f"found {len(starts)} image-start and {len(ends)} image-end tokens; expected equal counts")
    counts = []
    for s, e in zip(starts, ends, strict=True):
        n = int((ids[s + 1 : e] == context_token_id).sum())
        if n % num_image_token:
            raise ValueError(f"image block at {s} holds {n} context tokens, not a multiple of {num_image_token}")
        counts.append(n // num_image_token)
    return counts


def internvl_bbox_indices(
    bbox: Sequence[float],
    *,
    image_size: Sequence[int],
    tile_grid: Sequence[int],
    image_start: int,
    num_image_token: int = 256,
    thumbnail: bool = True,
) -> torch.Tensor:
    """Positions of the tile tokens a box covers, in every tile it touches plus the thumbnail.

    Args:
        tile_grid: ``(rows, cols)`` tile layout of the image (the image is resized to fill it).
        num_image_token: tokens per tile, a square (``g * g``, 256 for 448-px tiles).
        thumbnail: whether the processor appended a thumbnail tile (only when rows * cols > 1).
    """
    g = math.isqrt(num_image_token)
    if g * g != num_image_token:
        raise ValueError(f"num_image_token must be a square (g * g tokens per tile), found {num_image_token}")
    rows, cols = (int(v) for v in tile_grid)
    r0, r1, c0, c1 = box_to_cells(bbox, image_size, (rows * g, cols * g))
    rr, cc = torch.meshgrid(torch.arange(r0, r1), torch.arange(c0, c1), indexing="ij")
    tile = (rr // g) * cols + cc // g
    idx = [(image_start + tile * num_image_token + (rr % g) * g + cc % g).flatten()]
    if thumbnail and rows * cols > 1:
        thumb_start = image_start + rows * cols * num_image_token
        idx.append(cells_to_index(box_to_cells(bbox, image_size, (g, g)), g, thumb_start))
    return as_index(idx)


# ---------------------------------------------------------------------------- markers
def _encode_fragment(tokenizer, text: str) -> list[int]:
    tok = tokenizer if hasattr(tokenizer, "encode") else getattr(tokenizer, "tokenizer", None)
    if tok is None or not hasattr(tok, "encode"):
        raise TypeError(
            f"expected a tokenizer with encode() or a processor with .tokenizer, got {type(tokenizer).__name__}"
        )
    try:
        return list(tok.encode(text, add_special_tokens=False))
    except TypeError:
        return list(tok.encode(text))


def marker_variants(tokenizer, marker: str) -> list[tuple[int, ...]]:
    """Token sequences a marker may become in context: alone, and after a space (longest first)."""
    plain = tuple(_encode_fragment(tokenizer, marker))
    if not plain:
        raise ValueError(f"marker {marker!r} encodes to no tokens")
    spaced = tuple(_encode_fragment(tokenizer, " " + marker))
    # An atomic marker (or one the space stays apart from) must not swallow the user's space.
    if len(plain) == 1 or spaced[-len(plain) :] == plain:
        return [plain]
    return sorted({plain, spaced}, key=len, reverse=True)


def add_marker_tokens(
    tokenizer, markers: Iterable[str] = (*DEFAULT_TARGET_MARKERS, *DEFAULT_QUERY_MARKERS)
) -> list[int]:
    """Register markers as special (atomic) tokens so they tokenize the same in any context.

    Mutates ``tokenizer`` (or ``processor.tokenizer``); the new ids may lie past the model's
    vocabulary, which is fine because :func:`strip_markers` removes them before any forward pass.
    Returns the marker ids.
    """
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    markers = list(markers)
    tok.add_tokens(markers, special_tokens=True)
    return [tok.convert_tokens_to_ids(m) for m in markers]


@dataclass
class MarkedSpans:
    """Result of :func:`strip_markers`: the marker-free inputs and the enclosed spans per marker name."""

    inputs: dict = field(repr=False)
    spans: dict[str, list[tuple[int, int]]]

    def indices(self, name: str = "target") -> torch.Tensor:
        """Union (long [K]) of the enclosed positions for one marker name, in the marker-free ids."""
        return as_index(self.spans.get(name, []))


def find_marker_spans(
    ids: Sequence[int], pairs: Mapping[str, tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]]
) -> tuple[torch.Tensor, dict[str, list[tuple[int, int]]]]:
    """Locate marker token sequences in ``ids``.

    Args:
        pairs: name -> (open variants, close variants), each a list of token-id sequences.
    Returns:
        keep: bool [T], False on marker tokens; spans: name -> half-open ``(start, end)`` spans in
        the coordinates of ``ids[keep]`` (the marker-free sequence).
    Raises ValueError for a close without an open, a nested open of the same name or an unclosed span.
    """
    ids = [int(v) for v in ids]
    keep = torch.ones(len(ids), dtype=torch.bool)
    candidates = [
        (tuple(seq), name, kind)
        for name, (opens, closes) in pairs.items()
        for kind, seqs in (("open", opens), ("close", closes))
        for seq in seqs
    ]
    candidates.sort(key=lambda c: len(c[0]), reverse=True)
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in pairs}
    open_at: dict[str, int] = {}
    removed, i = 0, 0
    while i < len(ids):
        hit = next((c for c in candidates if c[0] and tuple(ids[i : i + len(c[0])]) == c[0]), None)
        if hit is None:
            i += 1
            continue
        seq, name, kind = hit
        keep[i : i + len(seq)] = False
        if kind == "open":
            if name in open_at:
                raise ValueError(f"marker {name!r} opened again at token {i} before being closed")
            open_at[name] = i - removed
        else:
            if name not in open_at:
                raise ValueError(f"marker {name!r} closed at token {i} without an open marker")
            spans[name].append((open_at.pop(name), i - removed))
        removed += len(seq)
        i += len(seq)
    if open_at:
        raise ValueError(f"marker(s) {sorted(open_at)} opened but never closed")
    return keep, spans


def strip_markers(
    inputs: Mapping,
    tokenizer,
    markers: Mapping[str, tuple[str, str]] | None = None,
    *,
    expected: Mapping[str, int] | None = None,
) -> MarkedSpans:
    """Remove marker tokens from a tokenized prompt and return the spans they enclosed.

    Args:
        inputs: a tokenizer / processor output with ``input_ids`` [1, T] (or [T]); every entry of
            SEQUENCE_KEYS present is cut at the same positions, other entries are kept as they are.
        tokenizer: anything with ``encode`` (or a processor with ``.tokenizer``), used to encode markers.
        markers: name -> (open string, close string); default ``{"target": DEFAULT_TARGET_MARKERS,
            "query": DEFAULT_QUERY_MARKERS}``.
        expected: name -> number of marked spans the prompt holds; a different count raises
            ValueError (markers merged with neighbouring text: register them with
            :func:`add_marker_tokens`).
    """
    markers = dict(markers or {"target": DEFAULT_TARGET_MARKERS, "query": DEFAULT_QUERY_MARKERS})
    pairs = {n: (marker_variants(tokenizer, o), marker_variants(tokenizer, c)) for n, (o, c) in markers.items()}
    ids = _ids_1d(inputs["input_ids"])
    keep, spans = find_marker_spans(ids.tolist(), pairs)
    for name, n in (expected or {}).items():
        if len(spans.get(name, [])) != n:
            raise ValueError(
                f"expected {n} {name!r} span(s) in the tokenized prompt, found {len(spans.get(name, []))}: "
                "the markers did not tokenize as on their own; register them with add_marker_tokens()"
            )
    out = dict(inputs)
    for key in SEQUENCE_KEYS:
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.shape[-1] == len(keep):
            out[key] = value[..., keep]
    return MarkedSpans(inputs=out, spans=spans)


# -------------------------------------------------------------------------- dispatch
def family_style(family: str) -> str:
    """ "qwen", "llava" or "internvl" for a family name of FAMILIES."""
    if family in QWEN_FAMILIES:
        return "qwen"
    if family == "llava_onevision":
        return "llava"
    if family == "internvl":
        return "internvl"
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


@dataclass
class VisualLayout:
    """What the processor produced for one prompt, as needed to locate visual tokens.

    Fields used per family: Qwen: image_grid_thw [N, 3], video_grid_thw [V, 3], merge_size,
    temporal_patch_size. LLaVA-OneVision: base_grid (e.g. 27), pooled_grid (video frames, e.g. 14),
    multi_image (images padded to square, one newline token each). InternVL: tile_counts,
    tile_grids (rows, cols) per image, num_image_token, thumbnail.
    """

    image_token_id: int
    video_token_id: int | None = None
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    frame_size: tuple[int, int] | None = None
    image_grid_thw: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    merge_size: int = 2
    temporal_patch_size: int = 2
    base_grid: int = 27
    pooled_grid: int | None = None
    multi_image: bool = False
    tile_counts: list[int] | None = None
    tile_grids: list[tuple[int, int]] | None = None
    num_image_token: int = 256
    thumbnail: bool = True


def image_slices(family: str, input_ids, layout: VisualLayout) -> list[torch.Tensor]:
    """Positions (long [n_i]) of every image's tokens, in prompt order."""
    style = family_style(family)
    pos = token_positions(input_ids, layout.image_token_id)
    if style == "qwen":
        if layout.image_grid_thw is None:
            raise ValueError("Qwen-VL layouts need image_grid_thw")
        return qwen_image_slices(
            input_ids, layout.image_grid_thw, image_token_id=layout.image_token_id, merge_size=layout.merge_size
        )
    if style == "llava":
        return uniform_slices(pos, max(len(layout.image_sizes), 1))
    if layout.tile_counts is None:
        raise ValueError("InternVL layouts need tile_counts (see internvl_tile_counts)")
    return cumulative_slices(pos, [c * layout.num_image_token for c in layout.tile_counts])


def frame_slices(family: str, input_ids, layout: VisualLayout, num_frames: int) -> list[torch.Tensor]:
    """Positions per sampled frame of the (single) video; Qwen frames of one temporal group share tokens."""
    style = family_style(family)
    if style == "qwen":
        groups = qwen_video_group_slices(
            input_ids, layout.video_grid_thw, video_token_id=layout.video_token_id, merge_size=layout.merge_size
        )
        if (num_frames - 1) // layout.temporal_patch_size >= len(groups):
            raise ValueError(
                f"{num_frames} frames need {(num_frames - 1) // layout.temporal_patch_size + 1} temporal groups "
                f"of {layout.temporal_patch_size}, video_grid_thw has {len(groups)}"
            )
        return [groups[f // layout.temporal_patch_size] for f in range(num_frames)]
    if style == "llava":  # frames share one video-token run, closed by one newline token
        return uniform_slices(token_positions(input_ids, layout.video_token_id), num_frames, trailing=1)
    # InternVL writes each frame as a one-tile image block of image context tokens
    return uniform_slices(token_positions(input_ids, layout.image_token_id), num_frames)


def image_token_grid(
    family: str, input_ids, layout: VisualLayout, image: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Positions (long [rows * cols], row-major) and ``(rows, cols)`` of one image's spatial token grid.

    Qwen-VL: the merged grid. LLaVA-OneVision: the base-resolution grid (first in the image's
    slice). InternVL: the thumbnail tile when the image was tiled, else its single tile.
    """
    style = family_style(family)
    positions = image_slices(family, input_ids, layout)[image]
    if style == "qwen":
        rows, cols = qwen_merged_grid(layout.image_grid_thw[image].tolist(), layout.merge_size)
        return positions, (rows, cols)
    if style == "llava":
        return positions[: layout.base_grid**2], (layout.base_grid, layout.base_grid)
    tiles = len(positions) // layout.num_image_token
    if tiles > 1 and not layout.thumbnail:
        raise ValueError(f"image {image} has {tiles} tiles and no thumbnail: no single grid covers the whole image")
    g = math.isqrt(layout.num_image_token)
    return positions[-layout.num_image_token :], (g, g)


def target_indices(
    family: str,
    input_ids,
    layout: VisualLayout,
    *,
    images: Iterable[int] = (),
    boxes: Mapping[int, Sequence[float]] | None = None,
    frames: Iterable[int] = (),
    frame_boxes: Mapping[int, Sequence[float]] | None = None,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Union (long [K]) of the target tokens of one prompt.

    Args:
        family: one of FAMILIES.
        images: indices of whole target images / pages.
        boxes: image index -> box in that image's pixels (``layout.image_sizes``).
        frames: sampled-frame indices of the video whose tokens are targets (whole frames).
        frame_boxes: sampled-frame index -> box in frame pixels (``layout.frame_size``).
        num_frames: frames in the video (needed for frames / frame_boxes).
    """
    style = family_style(family)
    parts: list[torch.Tensor] = []
    need_images = list(images) + list((boxes or {}).keys())
    per_image = image_slices(family, input_ids, layout) if need_images else []
    for i in images:
        parts.append(per_image[i])
    for i, box in (boxes or {}).items():
        start, size = int(per_image[i][0]), layout.image_sizes[i]
        if style == "qwen":
            grid_thw = layout.image_grid_thw[i].tolist()
            idx = qwen_bbox_indices(
                box, image_size=size, grid_thw=grid_thw, image_start=start, merge_size=layout.merge_size
            )
        elif style == "llava":
            idx = llava_base_bbox_indices(
                box, image_size=size, grid=layout.base_grid, image_start=start, pad_to_square=layout.multi_image
            )
        else:
            if layout.tile_grids is None:
                raise ValueError("InternVL boxes need tile_grids (rows, cols) per image")
            idx = internvl_bbox_indices(
                box,
                image_size=size,
                tile_grid=layout.tile_grids[i],
                image_start=start,
                num_image_token=layout.num_image_token,
                thumbnail=layout.thumbnail,
            )
        parts.append(idx)
    frames = list(frames)
    if frames or frame_boxes:
        if num_frames is None:
            raise ValueError("frames / frame_boxes need num_frames")
        per_frame = frame_slices(family, input_ids, layout, num_frames)
        parts.extend(per_frame[f] for f in frames)
        for f, box in (frame_boxes or {}).items():
            if layout.frame_size is None:
                raise ValueError("frame_boxes need layout.frame_size (width, height)")
            start = int(per_frame[f][0])
            if style == "qwen":
                rows, cols = qwen_merged_grid(layout.video_grid_thw[0].tolist(), layout.merge_size)
            elif style == "llava":
                rows = cols = layout.pooled_grid or math.ceil(layout.base_grid / 2)
            else:
                rows = cols = math.isqrt(layout.num_image_token)
            parts.append(cells_to_index(box_to_cells(box, layout.frame_size, (rows, cols)), cols, start))
    return as_index(parts)
