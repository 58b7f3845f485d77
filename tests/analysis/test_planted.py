"""Validation of the measurement: heads planted with a known answer are the ones RAM, ablation and
Key Token Ratio single out, in text-only models (with and without q/k norms) and every family."""

import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from core_attn.analysis import (
    ablate_heads,
    key_token_ratio,
    measure_ram,
    plant_retrieval_heads,
    ranked_heads,
    select_heads,
)
from core_attn.testing.tiny_models import FAMILIES, build_tiny_model, make_inputs

TARGET_ID = 470  # a text token id the random inputs never use (they draw from [1, 480) only in tiny_models:
# the inputs below overwrite every occurrence first)
PLANTED = ["L0H1", "L2H2", "L2H3", "L3H0"]  # L2H2 and L2H3 share kv_head 1


def text_model(kind):
    cls, cfg_cls = {"qwen3": (Qwen3ForCausalLM, Qwen3Config), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[kind]
    cfg = cfg_cls(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
    torch.manual_seed(0)
    return cls(cfg).eval()


def text_case(kind, length=200, targets=(20, 45, 46, 90, 130, 150), num_query=16):
    model = text_model(kind)
    ids = torch.randint(1, 400, (1, length), generator=torch.Generator().manual_seed(1))
    ids[0, list(targets)] = TARGET_ID
    return model, {"input_ids": ids}, torch.arange(length - num_query, length)


def family_case(family):
    model = build_tiny_model(family)
    x = make_inputs(family, model.config, model=model, text_len=40)
    ids = x.model_inputs["input_ids"]
    ids[ids == TARGET_ID] = 1
    qs, qe = x.question_spans[0]
    ids[0, [1, 3, qs + 2, qs + 5, qs + 11]] = TARGET_ID  # two in the prefix, three early in the question
    return model, x.model_inputs, torch.arange(qe - 12, qe)


def kl_after_ablation(model, inputs, heads, ref):
    with torch.no_grad(), ablate_heads(model, heads):
        logp = model(**inputs).logits[0, -1].log_softmax(-1)
    return float((ref.exp() * (ref - logp)).sum())


def check_planted(model, inputs, query_index):
    planted = plant_retrieval_heads(model, PLANTED, target_token_id=TARGET_ID)
    targets = planted.target_index(inputs["input_ids"])
    assert len(targets) >= 5
    result = measure_ram(model, inputs, query_index, targets, key_attention=True)
    ram = result.ram
    mask = planted.mask(*ram.shape)
    n = len(PLANTED)

    # 1. RAM ranks exactly the planted heads on top, by a wide margin
    assert set(ranked_heads(ram)[:n]) == set(planted.heads)
    assert float(ram[mask].min()) > 0.5
    assert float(ram[mask].min()) > 1.5 * float(ram[~mask].max())

    # 2. their Key Token Ratio is a hit (>= 0.5)
    ktr = key_token_ratio(result.key_attention, targets)
    assert bool((ktr[mask] >= 0.5).all()), ktr

    # 3. ablating them moves the output far more than ablating the bottom (or random) heads
    with torch.no_grad():
        ref = model(**inputs).logits[0, -1].log_softmax(-1)
    kl_top = kl_after_ablation(model, inputs, select_heads(ram, "top", n), ref)
    kl_bottom = kl_after_ablation(model, inputs, select_heads(ram, "bottom", n), ref)
    kl_random = kl_after_ablation(model, inputs, select_heads(ram, "random", n, seed=0), ref)
    assert kl_top > 20 * kl_bottom and kl_top > 5 * kl_random, (kl_top, kl_bottom, kl_random)
    return ram


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"], ids=["qwen3-qk-norm", "qwen2-qkv-bias"])
def test_planted_heads_are_recovered_in_text_models(kind):
    model, inputs, q = text_case(kind)
    ram = check_planted(model, inputs, q)
    assert float(ram[planted_mask(ram)].min()) > 0.9  # text only: nothing competes with the targets


def planted_mask(ram):
    mask = torch.zeros(ram.shape, dtype=torch.bool)
    for label in PLANTED:
        layer, q_head = label[1:].split("H")
        mask[int(layer), int(q_head)] = True
    return mask


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_heads_are_recovered_in_every_family(family):
    model, inputs, q = family_case(family)
    check_planted(model, inputs, q)


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"], ids=["qwen3-qk-norm", "qwen2-qkv-bias"])
def test_rope_leaves_the_planted_score_dimension_alone_over_1000_tokens(kind):
    """Targets ~1090 tokens before the queries score (almost) as well as targets right before them."""
    rams = {}
    for where, targets in (("far", (3, 7, 11, 15)), ("near", (1080, 1083, 1086, 1089))):
        model, inputs, q = text_case(kind, length=1100, targets=targets, num_query=8)
        planted = plant_retrieval_heads(model, PLANTED, target_token_id=TARGET_ID)
        ram = measure_ram(model, inputs, q, planted.target_index(inputs["input_ids"])).ram
        rams[where] = ram[planted.mask(*ram.shape)]
    assert float(rams["near"].min()) > 0.8  # 4 targets against ~1090 other keys
    assert bool((rams["far"] > 0.9 * rams["near"]).all()), rams


def test_planting_rewrites_only_the_documented_weights():
    model = text_model("qwen2")
    before = copy.deepcopy(model.state_dict())
    planted = plant_retrieval_heads(model, ["L1H2"], target_token_id=TARGET_ID)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    layer = "model.layers.1.self_attn."
    assert changed <= {"model.embed_tokens.weight", *(layer + p + s for p in ("q_proj", "k_proj", "v_proj", "o_proj")
                                                        for s in (".weight", ".bias"))}
    d, j = 16, planted.score_dim
    assert j == 7
    q_rows = (before[layer + "q_proj.weight"] != after[layer + "q_proj.weight"]).any(1).nonzero().flatten().tolist()
    assert q_rows == [2 * d + j, 2 * d + 15, 3 * d + j, 3 * d + 15]  # planted q_head 2 and its kv sibling 3
    k_rows = (before[layer + "k_proj.weight"] != after[layer + "k_proj.weight"]).any(1).nonzero().flatten().tolist()
    assert k_rows == [1 * d + j, 1 * d + 15]  # kv_head 1 only
    o_cols = (before[layer + "o_proj.weight"] != after[layer + "o_proj.weight"]).any(0).nonzero().flatten().tolist()
    assert o_cols == [2 * d]
    assert planted.labels == ["L1H2"] and planted.target_token_id == TARGET_ID
    dirs = torch.stack([planted.target_direction, planted.shared_direction, planted.output_direction])
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(3), atol=1e-5, rtol=0)


def test_plant_errors():
    model = text_model("qwen3")
    with pytest.raises(ValueError, match="target_token_id"):
        plant_retrieval_heads(model, ["L0H0"], target_token_id=512)
    with pytest.raises(ValueError, match="no heads"):
        plant_retrieval_heads(model, [], target_token_id=5)
    with pytest.raises(ValueError, match="outside"):
        plant_retrieval_heads(model, ["L4H0"], target_token_id=5)
