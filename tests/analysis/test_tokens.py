"""Target-token mapping (paper, appendix C) against hand-worked examples."""

import pytest
import torch

from core_attn.analysis import tokens as tk

# ------------------------------------------------------------------ grid projection


@pytest.mark.parametrize(
    "bbox, cells",
    [
        # 100x60 image on a 3x5 grid: cells are 20x20 px.
        ((25, 10, 61, 30), (0, 2, 1, 4)),  # cols floor(1.25)=1..ceil(3.05)=4, rows 0..ceil(1.5)=2
        ((20, 20, 40, 40), (1, 2, 1, 2)),  # exactly one cell: ceil on an edge does not spill over
        ((50, 30, 50, 30), (1, 2, 2, 3)),  # a point still covers the cell it lies in
        ((-10, -10, 1000, 1000), (0, 3, 0, 5)),  # clipped to the grid
        ((99.5, 59.5, 100, 60), (2, 3, 4, 5)),  # float box in the last cell
        ((100, 60, 100, 60), (2, 3, 4, 5)),  # a point on the far corner stays inside the grid
    ],
    ids=["general", "exact-cell", "point", "clipped", "float-last-cell", "far-corner"],
)
def test_box_to_cells(bbox, cells):
    assert tk.box_to_cells(bbox, (100, 60), (3, 5)) == cells


def test_cells_to_index_is_row_major_with_offset():
    assert tk.cells_to_index((0, 2, 1, 4), cols=5, offset=10).tolist() == [11, 12, 13, 16, 17, 18]


@pytest.mark.parametrize(
    "bbox, match",
    [
        ((10, 10, 5, 20), "x0 <= x1"),
        ((200, 0, 300, 10), "outside"),
        ((0, 0, float("nan"), 1), "finite"),
        ((1, 2, 3), "found 3 values"),
    ],
    ids=["inverted", "outside", "nan", "three-values"],
)
def test_box_to_cells_rejects_bad_boxes(bbox, match):
    with pytest.raises(ValueError, match=match):
        tk.box_to_cells(bbox, (100, 60), (3, 5))


# --------------------------------------------------------------------------- Qwen-VL
IMG, VID, VS, VE, TXT = 90, 91, 80, 81, 7


def test_qwen_bbox_hand_worked():
    # 800x600 image resized to 112x84 = grid (1, 6, 8) patches of 14 px -> 3x4 merged tokens of
    # 200x200 original px. Box cols floor(250/200)=1..ceil(420/200)=3, rows 0..ceil(330/200)=2.
    idx = tk.qwen_bbox_indices((250, 160, 420, 330), image_size=(800, 600), grid_thw=(1, 6, 8), image_start=6)
    assert idx.tolist() == [6 + 1, 6 + 2, 6 + 5, 6 + 6]


def test_qwen_bbox_same_via_patch_grid_and_resized_coordinates():
    # The same box in resized-image pixels (x scale 112/800 = 0.14) gives the same tokens.
    resized = (250 * 0.14, 160 * 0.14, 420 * 0.14, 330 * 0.14)
    a = tk.qwen_bbox_indices(resized, image_size=(112, 84), grid_thw=(1, 6, 8), image_start=0)
    b = tk.qwen_bbox_indices((250, 160, 420, 330), image_size=(800, 600), grid_thw=(1, 6, 8), image_start=0)
    assert a.tolist() == b.tolist() == [1, 2, 5, 6]


def test_qwen_merged_grid_rejects_odd_patch_grid():
    with pytest.raises(ValueError, match="not divisible by merge_size 2"):
        tk.qwen_merged_grid((1, 5, 8))


def test_qwen_image_slices_two_images():
    # text(3) VS img*4 VE text(2) VS img*12 VE
    ids = [TXT] * 3 + [VS] + [IMG] * 4 + [VE] + [TXT] * 2 + [VS] + [IMG] * 12 + [VE]
    grids = torch.tensor([[1, 4, 4], [1, 6, 8]])
    first, second = tk.qwen_image_slices(torch.tensor([ids]), grids, image_token_id=IMG)
    assert first.tolist() == [4, 5, 6, 7]
    assert second.tolist() == list(range(12, 24))


def test_qwen_image_slices_count_mismatch_names_both():
    ids = torch.tensor([IMG] * 5)
    with pytest.raises(ValueError, match=r"sum to 4, but input_ids hold 5"):
        tk.qwen_image_slices(ids, [[1, 4, 4]], image_token_id=IMG)


def test_qwen3_video_groups_skip_timestamp_text():
    # Qwen3-VL: "<0.5 seconds>" text + VS + 4 video tokens + VE per temporal group.
    ts = [TXT, TXT, TXT]
    ids = (ts + [VS] + [VID] * 4 + [VE]) * 3
    groups = tk.qwen_video_group_slices(torch.tensor(ids), [[3, 4, 4]], video_token_id=VID)
    assert [g.tolist() for g in groups] == [[4, 5, 6, 7], [13, 14, 15, 16], [22, 23, 24, 25]]


def test_qwen2_video_groups_contiguous():
    ids = [TXT, VS] + [VID] * 8 + [VE]
    groups = tk.qwen_video_group_slices(torch.tensor(ids), torch.tensor([[2, 4, 4]]), video_token_id=VID)
    assert [g.tolist() for g in groups] == [[2, 3, 4, 5], [6, 7, 8, 9]]


def test_qwen_frame_groups():
    assert tk.qwen_frame_groups([2, 3, 4, 9]) == [1, 2, 4]
    assert tk.qwen_frame_groups([0, 1, 2], temporal_patch_size=1) == [0, 1, 2]


# -------------------------------------------------------------------- LLaVA-OneVision


def test_llava_uniform_slices_and_trailing_newline():
    pos = torch.arange(13)  # 3 frames of 2x2 pooled tokens + 1 newline
    assert [s.tolist() for s in tk.uniform_slices(pos, 3, trailing=1)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="evenly into 3 items"):
        tk.uniform_slices(pos, 3)


def test_llava_base_bbox_plain_and_padded():
    # 60x30 image, 3x3 base grid. Plain resize: rows 0..ceil(10*3/30)=1, cols 0..ceil(20*3/60)=1.
    assert tk.llava_base_bbox_indices((0, 0, 20, 10), image_size=(60, 30), grid=3, image_start=5).tolist() == [5]
    # Padded to 60x60 (dy=15): y 15..25 -> rows floor(0.75)=0..ceil(1.25)=2.
    idx = tk.llava_base_bbox_indices((0, 0, 20, 10), image_size=(60, 30), grid=3, image_start=5, pad_to_square=True)
    assert idx.tolist() == [5, 8]


# --------------------------------------------------------------------------- InternVL
START, END, CTX = 60, 61, 62


def test_internvl_tile_counts_from_blocks():
    ids = [TXT, START] + [CTX] * 12 + [END, TXT, START] + [CTX] * 4 + [END]
    assert tk.internvl_tile_counts(
        torch.tensor(ids), context_token_id=CTX, start_token_id=START, end_token_id=END, num_image_token=4
    ) == [3, 1]


def test_internvl_tile_counts_rejects_partial_tile():
    ids = [START] + [CTX] * 5 + [END]
    with pytest.raises(ValueError, match="not a multiple of 4"):
        tk.internvl_tile_counts(ids, context_token_id=CTX, start_token_id=START, end_token_id=END, num_image_token=4)


def test_internvl_bbox_tiles_and_thumbnail():
    # 200x100 image on 1x2 tiles of 2x2 tokens (+ thumbnail): global grid 2x4 of 50x50 px.
    # Box cols 1..ceil(2.8)=3, row 0 -> cell (0,1) = tile 0 token 1; cell (0,2) = tile 1 token 0 = 4.
    # Thumbnail 2x2 over the whole image: cols 0..ceil(1.4)=2, row 0 -> 8 + {0, 1}.
    idx = tk.internvl_bbox_indices(
        (60, 10, 140, 40), image_size=(200, 100), tile_grid=(1, 2), image_start=3, num_image_token=4
    )
    assert idx.tolist() == [3 + 1, 3 + 4, 3 + 8, 3 + 9]
    single = tk.internvl_bbox_indices(
        (0, 0, 10, 10), image_size=(100, 100), tile_grid=(1, 1), image_start=0, num_image_token=4
    )
    assert single.tolist() == [0]  # one tile: no thumbnail


def test_internvl_bbox_rejects_non_square_tile():
    with pytest.raises(ValueError, match="must be a square"):
        tk.internvl_bbox_indices((0, 0, 1, 1), image_size=(10, 10), tile_grid=(1, 1), image_start=0, num_image_token=6)


# --------------------------------------------------------------------------- dispatch


def test_target_indices_qwen_pages_and_box():
    ids = [TXT] * 3 + [VS] + [IMG] * 4 + [VE] + [TXT] * 2 + [VS] + [IMG] * 12 + [VE]
    layout = tk.VisualLayout(
        image_token_id=IMG, image_sizes=[(56, 56), (800, 600)], image_grid_thw=torch.tensor([[1, 4, 4], [1, 6, 8]])
    )
    assert tk.target_indices("qwen3_vl", ids, layout, images=[0]).tolist() == [4, 5, 6, 7]
    both = tk.target_indices("qwen2_vl", ids, layout, images=[0], boxes={1: (250, 160, 420, 330)})
    assert both.tolist() == [4, 5, 6, 7, 12 + 1, 12 + 2, 12 + 5, 12 + 6]


def test_target_indices_qwen_video_frames_and_boxes():
    ids = ([TXT] * 3 + [VS] + [VID] * 4 + [VE]) * 3  # 6 frames -> 3 groups of 2x2 tokens
    layout = tk.VisualLayout(
        image_token_id=IMG, video_token_id=VID, frame_size=(64, 64), video_grid_thw=torch.tensor([[3, 4, 4]])
    )
    assert tk.target_indices("qwen3_vl", ids, layout, frames=[2, 3], num_frames=6).tolist() == [13, 14, 15, 16]
    # frame 5 (group 2 at 22..25): top-left 32x32 quadrant is token 0 of the 2x2 group.
    got = tk.target_indices("qwen3_vl", ids, layout, frame_boxes={5: (0, 0, 32, 32)}, num_frames=6)
    assert got.tolist() == [22]
    with pytest.raises(ValueError, match="need 4 temporal groups"):
        tk.target_indices("qwen3_vl", ids, layout, frames=[7], num_frames=8)


def test_target_indices_llava_multi_image_and_video():
    # two images, base grid 2 (4 tokens) + newline each
    ids = [TXT] + [IMG] * 5 + [TXT] + [IMG] * 5
    layout = tk.VisualLayout(
        image_token_id=IMG, video_token_id=VID, image_sizes=[(10, 10), (10, 10)], base_grid=2, multi_image=True
    )
    assert tk.target_indices("llava_onevision", ids, layout, images=[1]).tolist() == [7, 8, 9, 10, 11]
    assert tk.target_indices("llava_onevision", ids, layout, boxes={1: (6, 6, 10, 10)}).tolist() == [7 + 3]
    vid = [TXT] + [VID] * 9  # 2 frames x 2x2 pooled + newline
    vlayout = tk.VisualLayout(image_token_id=IMG, video_token_id=VID, frame_size=(8, 8), pooled_grid=2)
    assert tk.target_indices("llava_onevision", vid, vlayout, frames=[1], num_frames=2).tolist() == [5, 6, 7, 8]
    assert tk.target_indices("llava_onevision", vid, vlayout, frame_boxes={0: (4, 0, 8, 4)}, num_frames=2).tolist() == [
        2
    ]


def test_target_indices_internvl_cumulative():
    ids = [TXT, START] + [CTX] * 12 + [END, TXT, START] + [CTX] * 4 + [END]
    layout = tk.VisualLayout(
        image_token_id=CTX,
        image_sizes=[(200, 100), (50, 50)],
        tile_counts=[3, 1],
        tile_grids=[(1, 2), (1, 1)],
        num_image_token=4,
    )
    assert tk.target_indices("internvl", ids, layout, images=[1]).tolist() == [17, 18, 19, 20]
    assert tk.target_indices("internvl", ids, layout, boxes={0: (60, 10, 140, 40)}).tolist() == [3, 6, 10, 11]


def test_target_indices_unknown_family():
    with pytest.raises(ValueError, match="unknown model family 'gpt2'"):
        tk.target_indices("gpt2", [1, 2], tk.VisualLayout(image_token_id=1), images=[0])


# ---------------------------------------------------------------------------- markers


@pytest.fixture(scope="module")
def word_tokenizer():
    """Word-level tokenizer: Whitespace splits "<T>" into "<", "T", ">" and "</T>" into "</", "T", ">"."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "look", "at", "page", "two", "and", "answer", "<", ">", "</", "T", "Q", "what", "?"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


MARKS = {"target": ("<T>", "</T>"), "query": ("<Q>", "</Q>")}


def test_strip_markers_word_level(word_tokenizer):
    enc = word_tokenizer("look at <T> page two </T> and <Q> what ? </Q>", return_tensors="pt")
    # ids: look at < T > page two </ T > and < Q > what ? </ Q >
    out = tk.strip_markers(enc, word_tokenizer, MARKS, expected={"target": 1, "query": 1})
    assert out.inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5, 12, 13]]
    assert out.inputs["attention_mask"].shape == (1, 7)
    assert out.spans == {"target": [(2, 4)], "query": [(5, 7)]}
    assert out.indices("target").tolist() == [2, 3]


def test_strip_markers_union_of_targets_and_extra_sequence_keys(word_tokenizer):
    ids = word_tokenizer.encode("<T> look </T> at <T> page two </T>", add_special_tokens=False)
    inputs = {
        "input_ids": torch.tensor([ids]),
        "mm_token_type_ids": torch.arange(len(ids)).view(1, -1),
        "pixel_values": torch.ones(2, 3),
    }
    out = tk.strip_markers(inputs, word_tokenizer, {"target": MARKS["target"]})
    assert out.inputs["input_ids"].tolist() == [[1, 2, 3, 4]]
    assert out.inputs["mm_token_type_ids"].tolist() == [[3, 7, 11, 12]]  # positions of the kept tokens
    assert out.inputs["pixel_values"] is inputs["pixel_values"]
    assert out.indices().tolist() == [0, 2, 3]


@pytest.mark.parametrize(
    "text, match",
    [
        ("look </T> at", "closed at token 1 without an open"),
        ("<T> look <T> at </T>", "opened again"),
        ("<T> look", "never closed"),
    ],
    ids=["close-first", "nested", "unclosed"],
)
def test_strip_markers_unbalanced(word_tokenizer, text, match):
    ids = word_tokenizer.encode(text, add_special_tokens=False)
    with pytest.raises(ValueError, match=match):
        tk.strip_markers({"input_ids": torch.tensor(ids)}, word_tokenizer, {"target": MARKS["target"]})


def test_strip_markers_expected_count(word_tokenizer):
    ids = word_tokenizer.encode("look at page", add_special_tokens=False)
    with pytest.raises(ValueError, match=r"expected 1 'target' span\(s\) in the tokenized prompt, found 0"):
        tk.strip_markers(
            {"input_ids": torch.tensor(ids)}, word_tokenizer, {"target": MARKS["target"]}, expected={"target": 1}
        )


@pytest.fixture()
def byte_tokenizer():
    """Byte-level BPE with no merges: every byte is one token, " " becomes its own token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("atomic", [False, True], ids=["split-markers", "special-token-markers"])
def test_strip_markers_byte_level_keeps_spaces(byte_tokenizer, atomic):
    if atomic:
        ids = tk.add_marker_tokens(byte_tokenizer)
        assert len(set(ids)) == 4 and min(ids) >= 256
    text = "Look at <|core_target|>page two<|/core_target|>. <|core_query|>Why?<|/core_query|>"
    enc = byte_tokenizer(text, return_tensors="pt")
    out = tk.strip_markers(enc, byte_tokenizer, expected={"target": 1, "query": 1})
    clean = out.inputs["input_ids"][0]
    assert byte_tokenizer.decode(clean) == "Look at page two. Why?"
    (t0, t1), (q0, q1) = out.spans["target"][0], out.spans["query"][0]
    assert byte_tokenizer.decode(clean[t0:t1]) == "page two"
    assert byte_tokenizer.decode(clean[q0:q1]) == "Why?"


# ------------------------------------------------------- brute-force oracle over many boxes


def _overlapping_cells(bbox, image_size, grid):
    """Cells whose pixel rectangle overlaps the box with positive area (independent of floor / ceil)."""
    (w, h), (rows, cols) = image_size, grid
    x0, y0, x1, y1 = bbox
    return [
        (r, c)
        for r in range(rows)
        for c in range(cols)
        if c * w / cols < x1 and (c + 1) * w / cols > x0 and r * h / rows < y1 and (r + 1) * h / rows > y0
    ]


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_box_cells_match_overlap_oracle(seed):
    g = torch.Generator().manual_seed(seed)
    w, h = (int(v) for v in torch.randint(20, 200, (2,), generator=g))
    rows, cols = (int(v) for v in torch.randint(1, 12, (2,), generator=g))
    for _ in range(50):
        xs = sorted(torch.randint(0, w + 1, (2,), generator=g).tolist())
        ys = sorted(torch.randint(0, h + 1, (2,), generator=g).tolist())
        if xs[0] == xs[1] or ys[0] == ys[1]:
            continue
        r0, r1, c0, c1 = tk.box_to_cells((xs[0], ys[0], xs[1], ys[1]), (w, h), (rows, cols))
        got = [(r, c) for r in range(r0, r1) for c in range(c0, c1)]
        assert got == _overlapping_cells((xs[0], ys[0], xs[1], ys[1]), (w, h), (rows, cols))
