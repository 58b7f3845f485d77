"""core_hybrid on a tiny text-only decoder: registration, cache paths, decode, attach() errors."""

import copy
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import core_attn
from core_attn.hf.attention import core_hybrid_attention_forward

LAYERS, HQ, HKV = 3, 4, 2


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    cfg = Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HQ,
        num_key_value_heads=HKV,
        head_dim=16,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen3_text")
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    return path


def load(path, impl):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=impl).eval()


def head_config(seed=0):
    g = torch.Generator().manual_seed(seed)
    return core_attn.HeadConfig.from_scores(torch.rand(LAYERS, HQ, generator=g), num_kv_heads=HKV, model_id="tiny")


def inputs(batch=2, length=40, left_pad=(0, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for i, n in enumerate(left_pad[:batch]):
        mask[i, :n] = 0
    return dict(input_ids=ids, attention_mask=mask)


def test_registration_is_idempotent():
    core_attn.register()
    core_attn.register()
    assert ALL_ATTENTION_FUNCTIONS["core_hybrid"] is core_hybrid_attention_forward
    assert ALL_MASK_ATTENTION_FUNCTIONS["core_hybrid"] is sdpa_mask


def test_no_config_is_sdpa_and_warns_once(saved_dir, caplog):
    import core_attn.hf.attention as attention

    attention._warned.discard("no-config")
    ref, hyb = load(saved_dir, "sdpa"), load(saved_dir, "core_hybrid")
    x = inputs()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="core_attn"):
        expected = ref(**x).logits
        got = hyb(**x).logits
        hyb(**x)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert sum("no head config is attached" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_dense_matches_sdpa(saved_dir, cache):
    ref, hyb = load(saved_dir, "sdpa"), load(saved_dir, "core_hybrid")
    core_attn.attach(hyb, head_config(), dense=1.0)
    x = inputs()
    kw = dict(max_new_tokens=6, do_sample=False, cache_implementation=cache)
    with torch.no_grad():
        assert torch.equal(ref.generate(**x, **kw), hyb.generate(**x, **kw))


def test_small_window_changes_streaming_layers_only(saved_dir):
    ref, hyb = load(saved_dir, "sdpa"), load(saved_dir, "core_hybrid")
    cfg = core_attn.HeadConfig.from_scores(
        torch.tensor([[9.0] * HQ, [9.0] * HQ, [0.0, 0.0, 0.0, 1.0]]), num_kv_heads=HKV
    )
    mask = core_attn.attach(hyb, cfg, dense=2 * HQ + 1, sink_size=2, window_size=4)
    assert mask.sum() == 2 * HQ + 1 and not mask[2, :3].any()
    x = inputs(batch=1, left_pad=(0,))
    with torch.no_grad():
        r = ref(**x, output_hidden_states=True).hidden_states
        h = hyb(**x, output_hidden_states=True).hidden_states
    for layer in range(LAYERS - 1):  # hidden_states[l + 1] is the output of layer l: all-dense layers
        torch.testing.assert_close(h[layer + 1], r[layer + 1], atol=1e-5, rtol=0)
    assert (h[LAYERS] - r[LAYERS]).abs().max() > 1e-3  # the layer with streaming heads


def test_window_covering_sequence_equals_sdpa(saved_dir):
    ref, hyb = load(saved_dir, "sdpa"), load(saved_dir, "core_hybrid")
    core_attn.attach(hyb, head_config(), dense=0, sink_size=0, window_size=64)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(hyb(**x).logits, ref(**x).logits, atol=2e-5, rtol=0)


def test_padded_batch_equals_rows_one_by_one(saved_dir):
    hyb = load(saved_dir, "core_hybrid")
    core_attn.attach(hyb, head_config(), dense=0.25, sink_size=2, window_size=5)
    x = inputs(batch=2, left_pad=(0, 9))
    with torch.no_grad():
        batched = hyb(**x).logits
        for row, pad in enumerate((0, 9)):
            alone = hyb(input_ids=x["input_ids"][row : row + 1, pad:]).logits
            torch.testing.assert_close(batched[row, pad:], alone[0], atol=2e-5, rtol=0)


def test_decode_runs_full_attention_by_default(saved_dir):
    """After a hybrid prefill, a decode step sees every cached key: it equals a dense-config step."""
    hyb = load(saved_dir, "core_hybrid")
    x = inputs(batch=1, left_pad=(0,))
    nxt = torch.tensor([[5]])
    streaming = dict(dense=0, sink_size=1, window_size=3)
    with torch.no_grad():
        core_attn.attach(hyb, head_config(), **streaming)
        cache = hyb(**x, use_cache=True).past_key_values
        step = {}
        for name, kwargs in {
            "dense_default": streaming,
            "hybrid_decode": dict(streaming, decode="hybrid"),
            "all_dense": dict(dense=1.0),
        }.items():
            core_attn.attach(hyb, head_config(), **kwargs)
            step[name] = hyb(input_ids=nxt, past_key_values=copy.deepcopy(cache), use_cache=True).logits
    torch.testing.assert_close(step["dense_default"], step["all_dense"], atol=0, rtol=0)
    assert (step["hybrid_decode"] - step["all_dense"]).abs().max() > 1e-3


def test_chunked_prefill_matches_single_prefill(saved_dir):
    """Tq < Tk with a cache offset: two prefill chunks give the logits of one prefill."""
    hyb = load(saved_dir, "core_hybrid")
    core_attn.attach(hyb, head_config(), dense=0.25, sink_size=2, window_size=6)
    ids = inputs(batch=1, left_pad=(0,))["input_ids"]
    with torch.no_grad():
        full = hyb(input_ids=ids).logits
        first = hyb(input_ids=ids[:, :25], use_cache=True)
        second = hyb(input_ids=ids[:, 25:], past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(second[0], full[0, 25:], atol=2e-5, rtol=0)


def test_selection_survives_save_and_reload(saved_dir, tmp_path):
    hyb = load(saved_dir, "core_hybrid")
    mask = core_attn.attach(hyb, head_config(), dense=3, sink_size=2, window_size=5)
    hyb.save_pretrained(tmp_path)
    again = load(tmp_path, "core_hybrid")
    settings = core_attn.attached_settings(again)
    assert settings["dense_heads"] == [row.nonzero().flatten().tolist() for row in mask]
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, hyb(**x).logits, atol=0, rtol=0)
    core_attn.detach(again)
    assert core_attn.attached_settings(again) is None


def test_attach_switches_an_sdpa_model(saved_dir):
    model = load(saved_dir, "sdpa")
    core_attn.attach(model, head_config(), dense=0.5)
    assert model.config._attn_implementation == "core_hybrid"


MISMATCH = {
    "layers": (dict(shape=(LAYERS + 1, HQ), kv=HKV), r"4 layers, model \(.*\) has 3"),
    "q_heads": (dict(shape=(LAYERS, 8), kv=HKV), "8 q_heads per layer, model .* has 4"),
    "kv_heads": (dict(shape=(LAYERS, HQ), kv=4), "4 kv_heads per layer, model .* has 2"),
}


@pytest.mark.parametrize("case", list(MISMATCH), ids=list(MISMATCH))
def test_attach_refuses_a_config_of_another_shape(saved_dir, case):
    over, msg = MISMATCH[case]
    cfg = core_attn.HeadConfig.from_scores(torch.rand(*over["shape"]), num_kv_heads=over["kv"], model_id="other")
    with pytest.raises(ValueError, match=msg):
        core_attn.attach(load(saved_dir, "sdpa"), cfg, dense=0.5)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(dense=1.5), ValueError, r"\(0, 1\]"),
        (dict(dense=0.0), ValueError, r"\(0, 1\]"),
        (dict(dense=LAYERS * HQ + 1), ValueError, r"\[0, 12\]"),
        (dict(dense="5%"), TypeError, "dense"),
        (dict(dense=0.5, sink_size=-1), ValueError, "sink_size"),
        (dict(dense=0.5, decode="sparse"), ValueError, "decode"),
        (dict(dense=0.5, granularity="layer"), ValueError, "granularity"),
        (dict(dense=0.5, backend="flash"), ValueError, "backend"),
    ],
    ids=["frac>1", "frac0", "count>total", "str", "neg_sink", "decode", "granularity", "backend"],
)
def test_attach_bad_arguments(saved_dir, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        core_attn.attach(load(saved_dir, "sdpa"), head_config(), **kwargs)


def test_attach_without_config_explains_how_to_get_one(saved_dir):
    with pytest.raises(ValueError, match="head config"):
        core_attn.attach(load(saved_dir, "sdpa"), None, dense=0.5)


def test_nan_scores_are_rejected():
    s = torch.rand(LAYERS, HQ)
    s[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*L1H2"):
        core_attn.HeadConfig.from_scores(s, num_kv_heads=HKV)
