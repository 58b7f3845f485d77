"""Head ablation through o_proj pre-hooks, head selection, and the ablation sweep."""

import copy

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import core_attn
from core_attn.analysis.ablation import ablate_heads, ablation_sweep, head_mask, ranked_heads, select_heads
from core_attn.heads import HeadConfig
from core_attn.testing.tiny_models import build_tiny_model, make_inputs

LAYERS, HQ, HKV, D = 3, 4, 2, 16


def text_model(impl="sdpa"):
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                      num_attention_heads=HQ, num_key_value_heads=HKV, head_dim=D, max_position_embeddings=256)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    model.set_attn_implementation(impl)
    return model


def ids(length=32, seed=1):
    return torch.randint(1, 128, (1, length), generator=torch.Generator().manual_seed(seed))


def with_columns_scaled(model, pairs, scale):
    """Reference: a copy whose o_proj weight columns of the given q_heads are scaled."""
    ref = copy.deepcopy(model)
    decoder = ref.model if hasattr(ref.model, "layers") else ref.model.language_model
    layers = decoder.layers
    with torch.no_grad():
        for layer, q_head in pairs:
            layers[layer].self_attn.o_proj.weight[:, q_head * D : (q_head + 1) * D] *= scale
    return ref


def logits(model, **inputs):
    with torch.no_grad():
        return model(**inputs).logits


SCORES = torch.tensor([[0.1, 0.9, 0.3, 0.3], [0.8, 0.0, 0.5, 0.2], [0.3, 0.7, 0.05, 0.6]])


# ------------------------------------------------------------------------ head_mask
@pytest.mark.parametrize(
    "heads",
    [["L0H1", "L2H3"], [(0, 1), (2, 3)], torch.tensor([[0, 1], [2, 3]]), "mask"],
    ids=["labels", "pairs", "tensor-pairs", "bool-mask"],
)
def test_head_mask_forms_agree(heads):
    expected = torch.zeros(LAYERS, HQ, dtype=torch.bool)
    expected[0, 1] = expected[2, 3] = True
    got = head_mask(expected if isinstance(heads, str) else heads, LAYERS, HQ)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "heads,error,match",
    [
        (["L3H0"], ValueError, "outside the model's 3 layers x 4 q_heads"),
        ([(0, 4)], ValueError, "q_head=4"),
        (["layer0head1"], ValueError, "form 'L{layer}H{q_head}'"),
        ([1.5], TypeError, "pair or a label"),
        (torch.zeros(2, 4, dtype=torch.bool), ValueError, "shape"),
    ],
    ids=["layer-out-of-range", "q-head-out-of-range", "bad-label", "not-a-pair", "mask-shape"],
)
def test_head_mask_errors(heads, error, match):
    with pytest.raises(error, match=match):
        head_mask(heads, LAYERS, HQ)


# -------------------------------------------------------------------- ablate_heads
@pytest.mark.parametrize("impl", ["sdpa", "eager", "core_hybrid"])
@pytest.mark.parametrize("scale", [0.0, 0.5], ids=["zero", "half"])
def test_ablation_equals_scaling_o_proj_columns(impl, scale):
    model = text_model("sdpa" if impl == "core_hybrid" else impl)
    if impl == "core_hybrid":
        core_attn.attach(model, HeadConfig.from_scores(SCORES, num_kv_heads=HKV), dense=0.5, sink_size=2, window_size=4)
    pairs = [(0, 1), (1, 0), (1, 3), (2, 2)]
    x = {"input_ids": ids()}
    ref = logits(with_columns_scaled(model, pairs, scale), **x)
    before = logits(model, **x)
    with ablate_heads(model, [f"L{l}H{h}" for l, h in pairs], scale=scale) as mask:
        got = logits(model, **x)
    assert int(mask.sum()) == 4
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - before).abs().max() > 1e-4  # the ablation did something
    torch.testing.assert_close(logits(model, **x), before, atol=0, rtol=0)  # hooks removed


def test_ablation_on_a_multimodal_model_touches_only_the_text_decoder():
    model = build_tiny_model("qwen2_5_vl")
    x = make_inputs("qwen2_5_vl", model.config).model_inputs
    pairs = [(1, 2), (3, 0)]
    ref = logits(with_columns_scaled(model, pairs, 0.0), **x)
    with ablate_heads(model, pairs):
        got = logits(model, **x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_hooks_removed_when_the_block_raises():
    model = text_model()
    with pytest.raises(KeyError), ablate_heads(model, ["L0H0", "L2H1"]):
        assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 2
        raise KeyError("boom")
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_no_heads_is_the_identity():
    model = text_model()
    x = {"input_ids": ids()}
    with ablate_heads(model, []) as mask:
        got = logits(model, **x)
    assert not mask.any()
    torch.testing.assert_close(got, logits(model, **x), atol=0, rtol=0)


# -------------------------------------------------------------------- select_heads
def test_top_and_bottom_follow_the_scores_with_stable_ties():
    cfg = HeadConfig.from_scores(SCORES, num_kv_heads=HKV)
    assert select_heads(cfg, "top", 4) == [(0, 1), (1, 0), (2, 1), (2, 3)]
    assert select_heads(cfg, "bottom", 3) == [(1, 1), (2, 2), (0, 0)]
    # ties (0.3 at L0H2, L0H3, L2H0) keep (layer, q_head) order in both directions
    assert [p for p in ranked_heads(cfg) if SCORES[p] == 0.3] == [(0, 2), (0, 3), (2, 0)]
    assert [p for p in ranked_heads(cfg, descending=False) if SCORES[p] == 0.3] == [(0, 2), (0, 3), (2, 0)]
    assert select_heads(SCORES, "top", 0) == []


def test_random_is_reproducible_distinct_and_seeded():
    a = select_heads(SCORES, "random", 6, seed=3)
    assert a == select_heads(SCORES, "random", 6, seed=3)
    assert len(set(a)) == 6 and all(0 <= l < LAYERS and 0 <= h < HQ for l, h in a)
    assert a != select_heads(SCORES, "random", 6, seed=4)
    assert sorted(select_heads(SCORES, "random", 12)) == sorted(ranked_heads(SCORES))


@pytest.mark.parametrize(
    "strategy,k,match", [("middle", 1, "strategy"), ("top", 13, r"\[0, 12\]"), ("top", -1, r"\[0, 12\]")],
    ids=["unknown-strategy", "too-many", "negative"],
)
def test_select_heads_errors(strategy, k, match):
    with pytest.raises(ValueError, match=match):
        select_heads(SCORES, strategy, k)


# -------------------------------------------------------------------- ablation_sweep
def test_sweep_matches_manual_ablation_and_shares_the_baseline():
    model = text_model()
    x = {"input_ids": ids()}
    calls = []

    def evaluate(m):
        calls.append(1)
        return float(logits(m, **x)[0, -1, 7])

    ks = [0, 2, 5]
    curves = ablation_sweep(model, SCORES, ks, evaluate, seed=1, random_repeats=2, progress=False)
    assert list(curves) == ["top", "bottom", "random"] and all(len(v) == 3 for v in curves.values())
    baseline = evaluate(model)
    assert curves["top"][0] == curves["bottom"][0] == curves["random"][0] == baseline
    assert len(calls) == 1 + 1 + 2 + 2 + 2 * 2  # baseline once, top and bottom per k, random twice per k
    for strategy in ("top", "bottom"):
        with ablate_heads(model, select_heads(SCORES, strategy, 5)):
            assert curves[strategy][2] == evaluate(model)
    draws = []
    for seed in (1, 2):
        with ablate_heads(model, select_heads(SCORES, "random", 2, seed=seed)):
            draws.append(evaluate(model))
    assert curves["random"][1] == pytest.approx(sum(draws) / 2)
    assert curves["top"][1] != baseline


def test_sweep_validates_before_running():
    model = text_model()
    calls = []
    with pytest.raises(ValueError, match=r"\[0, 12\]"):
        ablation_sweep(model, SCORES, [1, 99], lambda m: calls.append(1) or 0.0, progress=False)
    with pytest.raises(ValueError, match="strategy"):
        ablation_sweep(model, SCORES, [1], lambda m: 0.0, strategies=("top", "worst"), progress=False)
    assert calls == []
