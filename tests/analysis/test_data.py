"""Dataset adapters, the shipped synthetic samples and the offline tiny processor."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core_attn.analysis import data as D
from core_attn.analysis import tokens as tk
from core_attn.data import SAMPLE_KINDS, sample_dir
from core_attn.data.make_samples import make_samples
from core_attn.data.tiny_processor import tiny_tokenizer


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    return {kind: D.load_records(sample_dir(kind), cache_dir=cache) for kind in SAMPLE_KINDS}


# ----------------------------------------------------------------------------- records


def test_shipped_samples_parse(records):
    assert {k: len(v) for k, v in records.items()} == {"refcocog": 4, "mmlongbench": 3, "mmdocir": 3, "vidstg": 3}
    ref = records["refcocog"][0]
    assert (ref.kind, ref.id, ref.boxes) == ("refcocog", "refcocog-0", {0: (28.0, 30.0, 52.0, 54.0)})
    assert ref.question == "Where is the red square on the left?" and ref.images[0].size == (96, 72)
    doc = records["mmlongbench"][2]
    assert doc.target_images == [0, 3] and len(doc.images) == 4 and doc.answer == "red"
    region = records["mmdocir"][0]
    assert region.boxes == {1: (6.0, 36.0, 54.0, 62.0)} and region.target_images == []
    vid = records["vidstg"][0]
    assert vid.is_video and vid.fps == 2.0 and len(vid.images) == 4
    assert vid.frame_boxes == {1: (17.0, 22.0, 33.0, 38.0), 2: (29.0, 22.0, 45.0, 38.0)}
    assert vid.target_frames == []  # every segment frame has a box


def test_samples_regenerate_identically(tmp_path):
    make_samples(tmp_path)
    for kind in SAMPLE_KINDS:
        shipped = sample_dir(kind)
        assert (tmp_path / kind / "records.jsonl").read_text() == (shipped / "records.jsonl").read_text()
        for line in (shipped / "records.jsonl").read_text().splitlines():
            row = json.loads(line)
            for rel in row.get("pages") or row.get("frames") or [row["image"]]:
                with Image.open(shipped / rel) as a, Image.open(tmp_path / kind / rel) as b:
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_parse_record_conversions(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    ref = D.parse_record(
        {"image": "a.png", "bbox": [5, 6, 10, 4], "bbox_format": "xywh", "expression": "the cat"}, root=tmp_path
    )
    assert ref.boxes == {0: (5.0, 6.0, 15.0, 10.0)} and ref.question == "Locate the cat."
    doc = D.parse_record(
        {"pages": ["a.png"] * 3, "evidence_pages": "[2, 3]", "question": "q"}, root=tmp_path, index_base=1
    )
    assert doc.kind == "mmlongbench" and doc.target_images == [1, 2]
    vid = D.parse_record(
        {"frames": ["a.png"] * 4, "segment": [1, 3], "boxes": {"1": [0, 0, 4, 4], "0": [1, 1, 2, 2]}, "question": "q"},
        root=tmp_path,
    )
    assert vid.frame_boxes == {1: (0.0, 0.0, 4.0, 4.0)}  # frame 0 lies outside the segment
    assert vid.target_frames == [2, 3] and vid.fps == 1.0


@pytest.mark.parametrize(
    "row, match",
    [
        ({"pages": ["a.png"], "evidence_pages": [3], "question": "q"}, r"evidence page\(s\) \[3\] not in 0..0"),
        ({"frames": ["a.png"] * 2, "segment": [1, 4], "question": "q"}, r"segment \[1, 4\] is not within 0..1"),
        ({"image": "a.png", "bbox": [1, 2, 3], "expression": "x"}, "expected a box of 4 numbers"),
        ({"image": "missing.png", "bbox": [1, 2, 3, 4], "expression": "x"}, "image 'missing.png' not found"),
        ({"text": "no visuals"}, r"cannot tell the record kind from keys \['text'\]"),
    ],
    ids=["page-out-of-range", "segment-out-of-range", "short-box", "missing-image", "unknown-kind"],
)
def test_parse_record_errors(tmp_path, row, match):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        D.parse_record(row, root=tmp_path)


def test_load_records_from_dataset_folder_with_image_bytes(tmp_path):
    """A parquet dataset folder (what a Hub dataset looks like) with embedded images and other column names."""
    import datasets

    buf = __import__("io").BytesIO()
    Image.new("RGB", (20, 10), (255, 0, 0)).save(buf, format="PNG")
    ds = datasets.Dataset.from_dict(
        {
            "img": [{"bytes": buf.getvalue(), "path": None}],
            "box": [[1, 2, 3, 4]],
            "expression": ["the red"],
            "id": ["x"],
        },
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "box": datasets.List(datasets.Value("int64")),
                "expression": datasets.Value("string"),
                "id": datasets.Value("string"),
            }
        ),
    )
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    (rec,) = D.load_records(
        tmp_path, "refcocog", column_map={"img": "image", "box": "bbox"}, cache_dir=str(tmp_path / "cache")
    )
    assert rec.images[0].size == (20, 10) and rec.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert rec.boxes == {0: (1.0, 2.0, 3.0, 4.0)}


# ----------------------------------------------------------------------- tiny tokenizer


def test_tiny_tokenizer_pins_special_ids_and_round_trips():
    tok = tiny_tokenizer(300, {"<|image_pad|>": 299, "<|vision_start|>": 0}, ["<|im_start|>"])
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 299 and tok.convert_tokens_to_ids("<|vision_start|>") == 0
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1  # lowest free id
    ids = tok.encode("héllo <|image_pad|>", add_special_tokens=False)
    assert ids[-1] == 299 and len(ids) == 8  # h, é (2 bytes), l, l, o, space, pad
    assert tok.decode(ids) == "héllo <|image_pad|>"
    assert max(tok.encode("any text at all ~", add_special_tokens=False)) < 300


def test_tiny_tokenizer_rejects_small_vocab():
    with pytest.raises(ValueError, match=r"needs vocab_size >= 258 \(2 special \+ 256 bytes\), found 200"):
        tiny_tokenizer(200, {"<a>": 1, "<b>": 2})


# ---------------------------------------------------------------- builder on tiny models
def _tiny_model(family):
    tiny_models = pytest.importorskip("core_attn.testing.tiny_models")
    return tiny_models.build_tiny_model(family)


@pytest.fixture(scope="module", params=tk.FAMILIES)
def tiny(request):
    model = _tiny_model(request.param)
    return request.param, model, D.SampleBuilder.for_tiny(model.config, request.param)


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_builder_runs_every_family_and_kind(tiny, records, kind):
    family, model, builder = tiny
    vocab = model.config.get_text_config().vocab_size
    for record in records[kind]:
        sample = builder(record)
        ids = sample.inputs["input_ids"][0]
        assert int(ids.max()) < vocab  # markers are gone
        decoded = builder.processor.tokenizer.decode(ids[sample.query_index])
        assert decoded == record.question
        assert sample.query_index.tolist() == list(range(int(sample.query_index[0]), int(sample.query_index[-1]) + 1))
        assert len(sample.target_index) > 0
        assert torch.isin(sample.target_index, sample.visual_index).all()
        assert len(sample.target_index) < len(sample.visual_index)
        with torch.no_grad():  # the model agrees with the token counts (it raises on a mismatch)
            model(**sample.inputs)


def test_qwen_marked_pages_equal_grid_slices(records):
    model = _tiny_model("qwen3_vl")
    builder = D.SampleBuilder.for_tiny(model.config)
    record = records["mmlongbench"][2]  # pages 0 and 3 of 4
    inputs, spans = builder.encode(record)
    assert len(spans["target"]) == 2
    sample = builder(record)
    pages = tk.image_slices("qwen3_vl", sample.inputs["input_ids"], sample.layout)
    assert sample.target_index.tolist() == torch.cat([pages[0], pages[3]]).tolist()


def test_qwen3_video_has_timestamps_between_groups(records):
    model = _tiny_model("qwen3_vl")
    builder = D.SampleBuilder.for_tiny(model.config)
    sample = builder(records["vidstg"][0])  # 4 frames at 2 fps -> groups at 0.25 s and 1.25 s
    text = builder.processor.tokenizer.decode(sample.inputs["input_ids"][0])
    assert "<0.2 seconds><|vision_start|>" in text and "<1.2 seconds><|vision_start|>" in text
    groups = tk.qwen_video_group_slices(
        sample.inputs["input_ids"], sample.inputs["video_grid_thw"], video_token_id=model.config.video_token_id
    )
    assert len(groups) == 2 and int(groups[1][0]) - int(groups[0][-1]) > 1  # text sits between the groups
    # frames 1 and 2 fall in groups 0 and 1: the target touches both
    assert torch.isin(sample.target_index, groups[0]).any() and torch.isin(sample.target_index, groups[1]).any()


def test_builder_refcocog_box_hand_check(records):
    """The box maps onto the merged grid the processor chose (checked cell by cell)."""
    model = _tiny_model("qwen2_5_vl")
    builder = D.SampleBuilder.for_tiny(model.config)
    sample = builder(records["refcocog"][0])  # 96x72 image, box (28, 30, 52, 54)
    t, h, w = sample.inputs["image_grid_thw"][0].tolist()
    rows, cols = h // 2, w // 2
    start = int(sample.visual_index[0])
    cells = [((int(i) - start) // cols, (int(i) - start) % cols) for i in sample.target_index]
    for r, c in cells:  # every target cell overlaps the box
        assert c * 96 / cols < 52 and (c + 1) * 96 / cols > 28 and r * 72 / rows < 54 and (r + 1) * 72 / rows > 30
    assert len(cells) == len(
        {
            (r, c)
            for r in range(rows)
            for c in range(cols)
            if c * 96 / cols < 52 and (c + 1) * 96 / cols > 28 and r * 72 / rows < 54 and (r + 1) * 72 / rows > 30
        }
    )
