"""core_hybrid on every supported multimodal family (tiny random-weight models, image inputs)."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

import core_attn
from core_attn.testing.tiny_models import FAMILIES, build_tiny_model, make_inputs, slice_inputs


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, saved folder, sdpa model) per family, built once."""
    path = tmp_path_factory.mktemp(request.param)
    ref = build_tiny_model(request.param, save_dir=str(path))
    return request.param, path, ref


def load(path, impl):
    return AutoModelForImageTextToText.from_pretrained(path, attn_implementation=impl).eval()


def scores_for(model, seed=0):
    layers, hq, hkv = core_attn.hf.model_head_shape(model)
    g = torch.Generator().manual_seed(seed)
    return core_attn.HeadConfig.from_scores(torch.rand(layers, hq, generator=g), num_kv_heads=hkv)


def batch(name, ref, **kw):
    return make_inputs(name, ref.config, batch_size=2, pad_lengths=[0, 5], model=ref, **kw)


def test_all_dense_equals_sdpa_logits_and_generate(family):
    name, path, ref = family
    hyb = load(path, "core_hybrid")
    core_attn.attach(hyb, scores_for(hyb), dense=1.0)
    x = batch(name, ref).model_inputs
    with torch.no_grad():
        torch.testing.assert_close(hyb(**x).logits, ref(**x).logits, atol=1e-5, rtol=0)
        kw = dict(max_new_tokens=4, do_sample=False)
        assert torch.equal(hyb.generate(**x, **kw), ref.generate(**x, **kw))


def test_no_head_config_is_exactly_sdpa(family):
    name, path, ref = family
    hyb = load(path, "core_hybrid")
    x = batch(name, ref).model_inputs
    with torch.no_grad():
        torch.testing.assert_close(hyb(**x).logits, ref(**x).logits, atol=0, rtol=0)


def test_text_config_only_leaves_vision_tower_on_sdpa(family):
    name, path, ref = family
    hyb = load(path, {"text_config": "core_hybrid"})
    assert hyb.config.get_text_config(decoder=True)._attn_implementation == "core_hybrid"
    assert hyb.config.vision_config._attn_implementation != "core_hybrid"
    core_attn.attach(hyb, scores_for(hyb), dense=0.25, sink_size=2, window_size=4)
    x = batch(name, ref).model_inputs
    with torch.no_grad():
        diff = (hyb(**x).logits - ref(**x).logits).abs().max()
    assert diff > 1e-4  # streaming heads changed the text decoder's output


def test_window_covering_sequence_equals_sdpa(family):
    name, path, ref = family
    hyb = load(path, "core_hybrid")
    core_attn.attach(hyb, scores_for(hyb), dense=0, sink_size=0, window_size=4096)
    x = batch(name, ref).model_inputs
    with torch.no_grad():
        torch.testing.assert_close(hyb(**x).logits, ref(**x).logits, atol=2e-5, rtol=0)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_padded_batch_equals_rows_one_by_one(family, padding):
    name, path, ref = family
    hyb = load(path, "core_hybrid")
    core_attn.attach(hyb, scores_for(hyb, seed=1), dense=0.3, sink_size=3, window_size=6)
    x = batch(name, ref, padding=padding)
    with torch.no_grad():
        logits = hyb(**x.model_inputs).logits
        for row in range(2):
            alone = slice_inputs(x, row)
            got = hyb(**alone.model_inputs).logits[0]
            keep = x.model_inputs["attention_mask"][row].bool()
            torch.testing.assert_close(logits[row, keep], got, atol=3e-5, rtol=0)
