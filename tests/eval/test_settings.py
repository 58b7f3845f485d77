"""core-attn settings of the lmms-eval models, applied to tiny models (no lmms-eval needed)."""

import pytest
import torch

import core_attn
from core_attn_eval.settings import CoreSettings, PrefillTimer, configure
from core_attn.testing.tiny_models import build_tiny_model, make_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    scores = torch.arange(4 * 4, dtype=torch.float32).view(4, 4).flip(1)  # distinct; L3H0 highest, L0H3 lowest
    folder = tmp_path_factory.mktemp("heads") / "cfg"
    core_attn.HeadConfig.from_scores(scores, num_kv_heads=2, model_id="tiny", sink_size=2, window_size=4).save_pretrained(folder)
    inputs = make_inputs("qwen3_vl", fresh().config, text_len=24, seed=1)
    return str(folder), scores, inputs


def fresh():
    """The same tiny model every time (seed 0), unmodified by earlier tests."""
    return build_tiny_model("qwen3_vl", seed=0).eval()


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs.model_inputs).logits


def test_model_args_parsing_takes_ours_and_leaves_the_rest():
    args = {"pretrained": "x", "device_map": "cpu", "dense": 0.05, "head_config": "org/repo", "sink": 64,
            "window": "None", "ablate": "Top", "ablate_k": 3, "seed": 7, "max_num_frames": 8}
    settings, rest = CoreSettings.from_model_args(args)
    assert rest == {"pretrained": "x", "device_map": "cpu", "max_num_frames": 8}
    assert settings == CoreSettings(head_config="org/repo", dense=0.05, sink=64, window=None, ablate="top", ablate_k=3, seed=7)
    assert CoreSettings.from_model_args({})[0].is_dense_baseline
    assert CoreSettings.from_model_args({"dense": 8})[0].dense == 8  # an int is a head count


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"dense": 0.0}, "dense"),
        ({"dense": 1.5}, "dense"),
        ({"dense": "half"}, "dense"),
        ({"dense": 0}, "head count"),
        ({"sink": -1}, "sink"),
        ({"ablate": "middle", "ablate_k": 2}, "ablate must be one of"),
        ({"ablate": "top"}, "ablate_k"),
        ({"ablate_k": 2}, "needs ablate"),
    ],
)
def test_bad_settings_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        CoreSettings.from_model_args(bad)


def test_dense_baseline_leaves_the_model_on_sdpa(tiny):
    folder, _, inputs = tiny
    model = fresh()
    before = logits(model, inputs)
    summary, stack = configure(model, CoreSettings(head_config=folder, dense=1.0))
    assert core_attn.attached_settings(model) is None and summary["dense_heads"] is None
    torch.testing.assert_close(logits(model, inputs), before, atol=0, rtol=0)
    stack.close()


def test_dense_fraction_attaches_the_head_config(tiny):
    folder, scores, inputs = tiny
    model = fresh()
    before = logits(model, inputs)
    summary, _ = configure(model, CoreSettings(head_config=folder, dense=2, sink=1, window=3))
    attached = core_attn.attached_settings(model)
    assert attached is not None and attached["sink_size"] == 1 and attached["window_size"] == 3
    assert (summary["sink_size"], summary["window_size"]) == (1, 3)
    defaults, _ = configure(fresh(), CoreSettings(head_config=folder, dense=2))
    assert (defaults["sink_size"], defaults["window_size"]) == (2, 4)  # the head config's own
    top2 = torch.topk(scores.flatten(), 2).indices.tolist()
    assert summary["dense_heads"] == sorted(f"L{i // 4}H{i % 4}" for i in top2)
    assert not torch.allclose(logits(model, inputs), before)  # streaming heads with window 3 change the output


@pytest.mark.parametrize("strategy", ["top", "bottom", "random"])
def test_ablation_silences_the_chosen_heads_until_closed(tiny, strategy):
    folder, scores, inputs = tiny
    model = fresh()
    before = logits(model, inputs)
    summary, stack = configure(model, CoreSettings(head_config=folder, ablate=strategy, ablate_k=3, seed=5))
    expected = core_attn.select_heads(core_attn.HeadConfig.from_pretrained(folder), strategy, 3, seed=5)
    assert summary["ablated_heads"] == sorted(f"L{l}H{h}" for l, h in expected)
    if strategy == "top":
        assert summary["ablated_heads"] == ["L3H0", "L3H1", "L3H2"]  # the highest scores of the fixture
    assert not torch.allclose(logits(model, inputs), before)
    stack.close()
    torch.testing.assert_close(logits(model, inputs), before, atol=0, rtol=0)


def test_random_ablation_follows_the_seed(tiny):
    folder, _, _ = tiny
    picks = [configure(fresh(), CoreSettings(head_config=folder, ablate="random", ablate_k=4, seed=s))[0]["ablated_heads"] for s in (1, 1, 2)]
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_prefill_timer_counts_prefills_not_decode_steps(tiny):
    _, _, inputs = tiny
    model = fresh()
    timer = PrefillTimer(model)
    with torch.no_grad():
        model.generate(**inputs.model_inputs, max_new_tokens=4, do_sample=False)
    summary = timer.summary()
    assert summary["prefills"] == 1 and summary["prefill_mean_s"] > 0
    assert summary["prefill_mean_tokens"] == inputs.model_inputs["input_ids"].shape[1]
    timer.close()
    with torch.no_grad():
        model(**inputs.model_inputs)
    assert timer.summary()["prefills"] == 1  # closed: no more hooks
