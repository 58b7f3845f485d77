"""HeadConfig: validation, selection (dense_mask) and the local folder format."""

import json
import math
import warnings

import pytest
import torch
from heads_helpers import HKV, HQ, LAYERS, make_config
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import core_attn
from core_attn.heads.config import CONFIG_NAME, FORMAT_VERSION, SCORES_NAME, HeadConfig


def _json(folder):
    return json.loads((folder / CONFIG_NAME).read_text())


def _rewrite_json(folder, **changes):
    data = _json(folder)
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    (folder / CONFIG_NAME).write_text(json.dumps(data))


# ------------------------------------------------------------------ round trip / format
def test_round_trip_keeps_every_field(tmp_path):
    cfg = make_config()
    cfg.save_pretrained(tmp_path)
    back = HeadConfig.from_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, SCORES_NAME]
    for name in ("num_kv_heads", "model_id", "model_revision", "sink_size", "window_size", "metric", "provenance"):
        assert getattr(back, name) == getattr(cfg, name), name
    assert torch.equal(back.scores, cfg.scores) and back.scores.dtype == torch.float32
    assert sorted(back.dataset_scores) == ["mmdocir", "refcocog"]
    for name, t in cfg.dataset_scores.items():
        assert torch.equal(back.dataset_scores[name], t)
    assert back.ranking().tolist() == cfg.ranking().tolist()


def test_json_is_sorted_stamped_and_tensor_free(tmp_path):
    make_config().save_pretrained(tmp_path)
    text = (tmp_path / CONFIG_NAME).read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["format_version"] == FORMAT_VERSION == "1.1"
    assert data["library"] == "core-attn" and data["library_version"] == core_attn.__version__
    assert (data["num_layers"], data["num_q_heads"], data["num_kv_heads"]) == (LAYERS, HQ, HKV)
    assert data["datasets"] == ["mmdocir", "refcocog"]
    assert data["provenance"]["datasets"] == {"refcocog": 12, "mmdocir": 5}
    assert "scores" not in data and "dataset_scores" not in data
    tensors = load_file(tmp_path / SCORES_NAME)
    assert sorted(tensors) == ["dataset/mmdocir", "dataset/refcocog", "scores"]
    assert all(t.dtype == torch.float32 and t.shape == (LAYERS, HQ) for t in tensors.values())


def test_minimal_config_round_trips(tmp_path):
    cfg = HeadConfig.from_scores(torch.arange(6.0).view(2, 3))
    assert cfg.num_kv_heads == 3 and cfg.model_id is None and cfg.model_revision is None
    cfg.save_pretrained(tmp_path)
    back = HeadConfig.from_pretrained(str(tmp_path))
    assert back.dataset_scores == {} and back.provenance == {} and (back.sink_size, back.window_size) == (128, 1024)


def test_format_1_0_files_load_without_warnings(tmp_path):
    make_config().save_pretrained(tmp_path)
    _rewrite_json(tmp_path, format_version="1.0", model_revision=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = HeadConfig.from_pretrained(tmp_path)
    assert back.model_revision is None


def test_unknown_keys_from_a_newer_minor_version_warn(tmp_path):
    make_config().save_pretrained(tmp_path)
    _rewrite_json(tmp_path, format_version="1.7", shiny_new_field={"x": 1})
    with pytest.warns(UserWarning, match=r"unknown keys \['shiny_new_field'\]"):
        back = HeadConfig.from_pretrained(tmp_path)
    assert back.model_id == "someorg/tiny-text"


def test_newer_major_version_fails_clearly(tmp_path):
    make_config().save_pretrained(tmp_path)
    _rewrite_json(tmp_path, format_version="2.0")
    with pytest.raises(ValueError, match=r"format_version 2.0, newer than .*\(1.1\): upgrade core-attn"):
        HeadConfig.from_pretrained(tmp_path)


BAD_FILES = {
    "no_json": (lambda d: (d / CONFIG_NAME).unlink(), FileNotFoundError, "head_config.json is missing"),
    "no_scores_file": (lambda d: (d / SCORES_NAME).unlink(), FileNotFoundError, "head_scores.safetensors is missing"),
    "json_not_json": (lambda d: (d / CONFIG_NAME).write_text("{oops"), ValueError, "not valid JSON"),
    "json_a_list": (lambda d: (d / CONFIG_NAME).write_text("[1, 2]"), ValueError, "JSON object, found list"),
    "bad_version": (lambda d: _rewrite_json(d, format_version="one"), ValueError, "expected 'MAJOR.MINOR'"),
    "no_kv_heads": (lambda d: _rewrite_json(d, num_kv_heads=None), ValueError, "no num_kv_heads"),
    "json_shape": (lambda d: _rewrite_json(d, num_layers=7), ValueError, r"shape \(3, 4\) but .* num_layers=7"),
    "safetensors_garbage": (lambda d: (d / SCORES_NAME).write_bytes(b"\x00" * 20), ValueError,
                            "not a valid safetensors"),
    "no_scores_tensor": (lambda d: save_file({"other": torch.ones(3, 4)}, d / SCORES_NAME), ValueError,
                         r"no 'scores' tensor \(found \['other'\]\)"),
    "nan": (lambda d: _set_tensor(d, "scores", 2, 1, float("nan")), ValueError, "non-finite .* first at L2H1"),
    "inf_in_dataset": (lambda d: _set_tensor(d, "dataset/refcocog", 0, 3, float("inf")), ValueError,
                       r"dataset_scores\['refcocog'\] contains 1 non-finite"),
    "dataset_shape": (lambda d: _put_tensor(d, "dataset/refcocog", torch.ones(2, 4)), ValueError,
                      r"dataset_scores\['refcocog'\] has shape \(2, 4\), expected .* \[3, 4\]"),
    "dataset_missing": (lambda d: _drop_tensor(d, "dataset/mmdocir"), ValueError,
                        r"lists per-dataset scores \['mmdocir', 'refcocog'\] but .* holds \['refcocog'\]"),
    "kv_not_divisor": (lambda d: _rewrite_json(d, num_kv_heads=3), ValueError, r"num_q_heads \(4\).*multiple.*\(3\)"),
    "negative_window": (lambda d: _rewrite_json(d, window_size=-1), ValueError, "window_size must be a non-negative"),
}


def _tensors(d):
    return dict(load_file(d / SCORES_NAME))


def _set_tensor(d, name, i, j, value):
    t = _tensors(d)
    t[name][i, j] = value
    save_file(t, d / SCORES_NAME)


def _put_tensor(d, name, value):
    t = _tensors(d)
    t[name] = value
    save_file(t, d / SCORES_NAME)


def _drop_tensor(d, name):
    t = _tensors(d)
    del t[name]
    save_file(t, d / SCORES_NAME)


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_folders_fail_with_what_was_expected(tmp_path, case):
    make_config().save_pretrained(tmp_path)
    breaker, exc, msg = BAD_FILES[case]
    breaker(tmp_path)
    with pytest.raises(exc, match=msg):
        HeadConfig.from_pretrained(tmp_path)


def test_unknown_tensors_warn(tmp_path):
    make_config().save_pretrained(tmp_path)
    _put_tensor(tmp_path, "extra", torch.ones(1))
    with pytest.warns(UserWarning, match=r"unknown tensors \['extra'\]"):
        HeadConfig.from_pretrained(tmp_path)


def test_unserialisable_provenance_writes_nothing(tmp_path):
    cfg = make_config(provenance={"when": object()})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        cfg.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no head config folder"):
        HeadConfig.from_pretrained(tmp_path / "nope")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(scores=[[1.0]]), TypeError, "torch.Tensor"),
        (dict(scores=torch.ones(4)), ValueError, "2-d"),
        (dict(scores=torch.ones(2, 2, dtype=torch.bool)), ValueError, "real numbers"),
        (dict(scores=torch.ones(2, 4), num_kv_heads=0), ValueError, "positive int"),
        (dict(scores=torch.ones(2, 4), num_kv_heads=True), ValueError, "positive int"),
        (dict(scores=torch.ones(2, 4), num_kv_heads=3), ValueError, "multiple"),
        (dict(scores=torch.ones(2, 4), sink_size=1.5), ValueError, "sink_size"),
        (dict(scores=torch.ones(2, 4), provenance=[1]), TypeError, "provenance"),
        (dict(scores=torch.ones(2, 4), model_revision=3), TypeError, "model_revision"),
    ],
    ids=["list", "1d", "bool", "kv0", "kv_bool", "kv_not_divisor", "float_sink", "provenance_list", "revision_int"],
)
def test_invalid_fields(kwargs, exc, msg):
    kwargs.setdefault("num_kv_heads", 2)
    with pytest.raises(exc, match=msg):
        HeadConfig(**kwargs)


def test_scores_are_copied_to_cpu_float32():
    src = torch.arange(8, dtype=torch.int64).view(2, 4)
    cfg = HeadConfig.from_scores(src, num_kv_heads=2)
    assert cfg.scores.dtype == torch.float32 and cfg.scores.is_contiguous()
    src[0, 0] = 100
    assert cfg.scores[0, 0] == 0


# ------------------------------------------------------------------------------ selection
def _cfg(scores, hkv=None):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    return HeadConfig.from_scores(scores, num_kv_heads=hkv or scores.shape[1])


@pytest.mark.parametrize(
    "dense,total,expected",
    [(0.1, 16, 2), (0.25, 16, 4), (1 / 3, 12, 4), (0.05, 16, 1), (0.01, 16, 1), (1.0, 16, 16), (0.999, 16, 16)],
    ids=["0.1_of_16", "0.25_exact", "third_fp_error", "0.05", "tiny_frac", "all", "almost_all"],
)
def test_fractions_round_up(dense, total, expected):
    cfg = _cfg(torch.rand(total // 4, 4))
    assert cfg.num_selected(dense) == expected == int(cfg.dense_mask(dense).sum())


@pytest.mark.parametrize("dense", [0, 1, 5, 12])
def test_int_counts_are_exact(dense):
    assert int(_cfg(torch.rand(3, 4)).dense_mask(dense).sum()) == dense


def test_dense_mask_keeps_the_best_heads():
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.8, 0.0, 0.7, 0.4]])
    mask = _cfg(scores).dense_mask(3)
    assert mask.tolist() == [[False, True, False, False], [True, False, True, False]]
    assert _cfg(scores).top_heads(3) == ["L0H1", "L1H0", "L1H2"]


def test_ties_break_by_layer_then_head():
    cfg = _cfg(torch.zeros(3, 4))
    assert cfg.top_heads(5) == ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"]
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5], [0.9, 0.5, 0.5, 0.5]])
    assert _cfg(scores).top_heads(4) == ["L0H1", "L1H0", "L0H0", "L0H2"]


def test_granularity_kv_keeps_whole_groups():
    # kv groups (2 q_heads each): L0 means [0.5, 0.45], L1 means [0.05, 0.85]
    scores = torch.tensor([[0.9, 0.1, 0.45, 0.45], [0.0, 0.1, 0.8, 0.9]])
    cfg = _cfg(scores, hkv=2)
    assert cfg.ranking("kv").tolist() == [[1, 1], [0, 0], [0, 1], [1, 0]]
    mask = cfg.dense_mask(2, granularity="kv")  # 2 kv_heads -> 4 q_heads
    assert mask.tolist() == [[True, True, False, False], [False, False, True, True]]
    assert cfg.num_selected(0.25, "kv") == 1 and int(cfg.dense_mask(0.25, "kv").sum()) == 2
    with pytest.raises(ValueError, match=r"count of kv_heads and must be in \[0, 4\]"):
        cfg.dense_mask(5, granularity="kv")


@pytest.mark.parametrize(
    "dense,exc,msg",
    [
        (0.0, ValueError, r"\(0, 1\]"),
        (1.5, ValueError, r"\(0, 1\]"),
        (-0.2, ValueError, r"\(0, 1\]"),
        (float("nan"), ValueError, r"\(0, 1\]"),
        (float("inf"), ValueError, r"\(0, 1\]"),
        (-1, ValueError, r"\[0, 12\]"),
        (13, ValueError, r"\[0, 12\]"),
        (True, TypeError, "dense"),
        ("5%", TypeError, "dense"),
        (None, TypeError, "dense"),
    ],
    ids=["zero", "over1", "negative", "nan", "inf", "neg_count", "count_over", "bool", "str", "none"],
)
def test_bad_dense_values(dense, exc, msg):
    with pytest.raises(exc, match=msg):
        _cfg(torch.rand(3, 4)).dense_mask(dense)


def test_bad_granularity():
    with pytest.raises(ValueError, match="granularity must be one of"):
        _cfg(torch.rand(3, 4)).dense_mask(2, granularity="layer")


@settings(max_examples=60, deadline=None)
@given(
    layers=st.integers(1, 5),
    group=st.integers(1, 3),
    hkv=st.integers(1, 3),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
)
def test_selection_properties(layers, group, hkv, frac, seed, coarse):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (layers, hkv * group), generator=g).float() if coarse else torch.rand(
        layers, hkv * group, generator=g
    )
    cfg = HeadConfig.from_scores(scores, num_kv_heads=hkv)
    total = layers * hkv * group
    mask = cfg.dense_mask(frac)
    assert int(mask.sum()) == min(total, math.ceil(frac * total - 1e-9))
    if 0 < int(mask.sum()) < total:
        assert scores[mask].min() >= scores[~mask].max()
    assert torch.equal(mask, cfg.dense_mask(frac))  # deterministic
    kv_mask = cfg.dense_mask(frac, granularity="kv")
    groups = kv_mask.view(layers, hkv, group)
    assert bool((groups.all(-1) | ~groups.any(-1)).all())  # whole groups only
    assert int(groups.all(-1).sum()) == cfg.num_selected(frac, "kv")


def test_repr_names_the_top_heads():
    text = repr(_cfg(torch.tensor([[0.0, 1.0], [0.5, 0.2]])))
    assert "top=['L0H1', 'L1H0', 'L1H1', 'L0H0']" in text
