"""RAM probe: equals eager attention, leaves the model as it was, bounded memory; RamAccumulator."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import core_attn
import core_attn.analysis.probe as P
from core_attn.analysis.probe import (
    RamAccumulator,
    measure_ram,
    probe,
    ram_over_dataset,
    ram_scores,
    vision_scores,
)
from core_attn.testing.tiny_models import FAMILIES, build_tiny_model, make_inputs

REPO = Path(__file__).resolve().parents[2]


def text_model(hq=4, hkv=2, layers=3, seed=0):
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=hq, num_key_value_heads=hkv, head_dim=16, max_position_embeddings=512)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg).eval().to(torch.float32), cfg


def text_ids(length=48, seed=1):
    return torch.randint(1, 128, (1, length), generator=torch.Generator().manual_seed(seed))


def eager_reference(model, inputs, q, t, v=None):
    """RAM, vision mass and mean key attention [L, HQ, Tk] from eager attention with output_attentions."""
    tc = model.config.get_text_config(decoder=True)
    previous = tc._attn_implementation
    if tc is model.config:
        model.set_attn_implementation("eager")
    else:
        model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.no_grad():
            attn = torch.stack([a[0] for a in model(**inputs, output_attentions=True).attentions])  # [L, HQ, T, T]
    finally:
        model.set_attn_implementation(previous if tc is model.config else {"text_config": previous})
    rows = attn[:, :, q]  # [L, HQ, |Q|, T]
    vision = rows[..., v].sum(-1).mean(-1) if v is not None else None
    return rows[..., t].sum(-1).mean(-1), vision, rows.mean(2)


# ------------------------------------------------------------------ parity with eager
@pytest.fixture(scope="module", params=FAMILIES)
def family_case(request):
    model = build_tiny_model(request.param)
    x = make_inputs(request.param, model.config, model=model, text_len=10)
    return request.param, model, x


def test_multimodal_family_matches_eager_attentions(family_case):
    _family, model, x = family_case
    (qs, qe), (vs, ve) = x.question_spans[0], x.image_token_spans[0]
    q, v = torch.arange(qs, qe), torch.arange(vs, ve)
    t = v[1::3]  # a scattered "ground-truth region" inside the image
    got = measure_ram(model, x.model_inputs, q, t, vision_index=v, key_attention=True)
    ram, vision, keys = eager_reference(model, x.model_inputs, q, t, v)
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    assert got.ram.shape == (layers, 4) and got.ram.dtype == torch.float32
    torch.testing.assert_close(got.ram, ram, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.vision, vision, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.key_attention, keys, atol=2e-6, rtol=1e-5)
    # the query rows' attention is a distribution: all keys together carry mass 1
    torch.testing.assert_close(got.key_attention.sum(-1), torch.ones(layers, 4), atol=1e-5, rtol=0)
    assert (got.num_query, got.num_target, got.seq_len) == (qe - qs, len(t), x.model_inputs["input_ids"].shape[1])


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa-g2", "mqa-g6"])
def test_text_model_matches_eager_for_every_kv_grouping(hq, hkv):
    model, _ = text_model(hq, hkv)
    x = {"input_ids": text_ids()}
    q, t = torch.arange(36, 48), torch.tensor([0, 5, 6, 7, 20])
    got = measure_ram(model, x, q, t, key_attention=True)
    ram, _, keys = eager_reference(model, x, q, t)
    torch.testing.assert_close(got.ram, ram, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got.key_attention, keys, atol=2e-6, rtol=1e-5)


def test_left_padding_uses_the_models_bool_mask():
    model, _ = text_model()
    ids = text_ids(40)
    mask = torch.ones_like(ids)
    mask[0, :6] = 0  # left padding: the mask reaches the probe as bool rows
    x = {"input_ids": ids, "attention_mask": mask}
    q, t = torch.arange(30, 40), torch.tensor([8, 9, 15])
    got = measure_ram(model, x, q, t, key_attention=True)
    ram, _, _keys = eager_reference(model, x, q, t)
    torch.testing.assert_close(got.ram, ram, atol=2e-6, rtol=1e-5)
    assert float(got.key_attention[..., :6].abs().max()) == 0.0  # padded keys get nothing
    unpadded = measure_ram(model, {"input_ids": ids}, q, t)
    assert not torch.allclose(got.ram, unpadded.ram)  # the mask was applied, not ignored


def test_many_small_row_blocks_give_the_same_scores(monkeypatch):
    model, _ = text_model()
    x = {"input_ids": text_ids()}
    q, t = torch.arange(31, 48), torch.arange(2, 12)  # 17 query rows, 34 per kv_head
    whole = measure_ram(model, x, q, t, key_attention=True)
    monkeypatch.setattr(P, "_BLOCK_ELEMENTS", 150)  # Tk = 48: blocks of 3 rows, the last one short
    blocked = measure_ram(model, x, q, t, key_attention=True)
    torch.testing.assert_close(blocked.ram, whole.ram, atol=1e-7, rtol=0)
    torch.testing.assert_close(blocked.key_attention, whole.key_attention, atol=1e-7, rtol=0)


def test_ram_scores_is_the_ram_of_measure_ram():
    model, _ = text_model()
    x = {"input_ids": text_ids()}
    q, t = torch.arange(40, 48), torch.tensor([3, 4])
    torch.testing.assert_close(ram_scores(model, x, q, t), measure_ram(model, x, q, t).ram, atol=0, rtol=0)


# ---------------------------------------------------------------- the model is untouched
@pytest.mark.parametrize("impl", ["sdpa", "eager", "core_hybrid"])
def test_forward_unchanged_and_implementation_restored(impl):
    model, _ = text_model()
    x = {"input_ids": text_ids()}
    with torch.no_grad():
        ref = model(**x).logits  # sdpa
        if impl == "core_hybrid":
            scores = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
            core_attn.attach(model, core_attn.HeadConfig.from_scores(scores, num_kv_heads=2), dense=0.25,
                             sink_size=2, window_size=4)
        else:
            model.set_attn_implementation(impl)
        with probe(model, torch.arange(40, 48), [1, 2]) as rec:
            assert model.config._attn_implementation == "core_probe"
            logits = model(**x).logits
        after = model(**x).logits
    assert model.config._attn_implementation == impl
    torch.testing.assert_close(logits, ref, atol=0, rtol=0)  # the probe's forward is sdpa's
    if impl == "core_hybrid":  # the hybrid selection is still attached and active
        assert core_attn.attached_settings(model) is not None and (after - ref).abs().max() > 1e-4
    assert rec.result().ram.shape == (3, 4)
    assert not P._RECORDERS


def test_vision_scores_is_mass_on_all_visual_tokens(family_case):
    _family, model, x = family_case
    (qs, qe), (vs, ve) = x.question_spans[0], x.image_token_spans[0]
    q, v = torch.arange(qs, qe), torch.arange(vs, ve)
    full = measure_ram(model, x.model_inputs, q, v[:2], vision_index=v)
    torch.testing.assert_close(vision_scores(model, x.model_inputs, q, v), full.vision, atol=0, rtol=0)
    assert bool((full.vision >= full.ram - 1e-7).all())  # the region is part of the image


def test_multimodal_probe_switches_only_the_text_decoder(family_case):
    _family, model, x = family_case
    tc, vc = model.config.get_text_config(decoder=True), model.config.vision_config
    vision_before = vc._attn_implementation
    with probe(model, [x.question_spans[0][0]], [0]) as rec:
        during = (tc._attn_implementation, vc._attn_implementation)
        with torch.no_grad():
            model(**x.model_inputs)
    assert during == ("core_probe", vision_before)
    assert (tc._attn_implementation, vc._attn_implementation) == ("sdpa", vision_before)
    assert rec.result().ram.shape[0] == tc.num_hidden_layers


def test_core_probe_everywhere_routes_vision_tower_to_sdpa():
    model = build_tiny_model("qwen2_5_vl", attn_implementation="sdpa")
    everywhere = build_tiny_model("qwen2_5_vl", attn_implementation="core_probe")
    x = make_inputs("qwen2_5_vl", model.config).model_inputs
    with torch.no_grad():
        torch.testing.assert_close(everywhere(**x).logits, model(**x).logits, atol=0, rtol=0)
    assert everywhere.config.vision_config._attn_implementation == "core_probe"


def test_restored_when_the_forward_fails():
    model, _ = text_model()
    with pytest.raises(ValueError, match="batch size 1"), probe(model, [3], [1]), torch.no_grad():
        model(input_ids=text_ids().repeat(2, 1))
    assert model.config._attn_implementation == "sdpa" and not P._RECORDERS


@pytest.mark.parametrize(
    "what,match",
    [
        ("no-forward", "recorded 0 of 3 text layers"),
        ("two-forwards", "saw layer 0 twice"),
        ("nested", "already active"),
    ],
)
def test_misuse_is_reported(what, match):
    model, _ = text_model()
    x = {"input_ids": text_ids()}
    with pytest.raises(RuntimeError, match=match), probe(model, [40], [1]) as rec, torch.no_grad():
        if what == "two-forwards":
            model(**x)
            model(**x)
        if what == "nested":
            with probe(model, [40], [1]):
                pass
        rec.result()
    assert model.config._attn_implementation == "sdpa" and not P._RECORDERS


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"query_index": [50], "target_index": [1]}, ValueError, "query_index has position 50"),
        ({"query_index": [40], "target_index": [48]}, ValueError, "target_index has position 48"),
        ({"query_index": [], "target_index": [1]}, ValueError, "query_index is empty"),
        ({"query_index": [40, 40], "target_index": [1]}, ValueError, "duplicate"),
        ({"query_index": [40], "target_index": [-1]}, ValueError, "non-negative"),
        ({"query_index": [40.0], "target_index": [1]}, TypeError, "integer"),
    ],
    ids=["query-past-end", "target-past-end", "empty-query", "duplicate", "negative", "float"],
)
def test_bad_indices(kwargs, error, match):
    model, _ = text_model()
    with pytest.raises(error, match=match):
        measure_ram(model, {"input_ids": text_ids()}, **kwargs)
    assert model.config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, re, sys, torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from core_attn.analysis.probe import measure_ram

    mode, T = sys.argv[1], int(sys.argv[2])
    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))  # KiB
    cfg = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=T + 8)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    ids = torch.randint(1, 512, (1, T))
    q, t = torch.arange(T - 64, T), torch.arange(100, 400)
    with torch.no_grad():  # warm up both paths on a short input
        model(input_ids=ids[:, :256], use_cache=False, logits_to_keep=1)
        measure_ram(model, {"input_ids": ids[:, :256]}, torch.arange(200, 256), torch.arange(10))
        base = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark (VmHWM)
        if mode == "sdpa":
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        else:
            measure_ram(model, {"input_ids": ids}, q, t, key_attention=True)
    print(json.dumps({"peak_mib": (status("VmHWM") - base) / 1024}))
    """
)


def _peak_mib(mode: str, seq_len: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, mode, str(seq_len)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc peak-RSS reset")
def test_memory_at_32k_tokens_within_1_25x_of_sdpa():
    """Peak RSS above the pre-forward level, fresh processes: sdpa forward vs measure_ram (|Q| = 64, keys kept).

    One [T, T] fp32 matrix at T = 32k would be 4 GiB; the budget here is a quarter of the
    sdpa forward's own peak (tens of MiB).
    """
    sdpa = _peak_mib("sdpa", 32768)
    probed = _peak_mib("probe", 32768)
    print(f"peak above baseline at T=32768: sdpa {sdpa:.1f} MiB, probe {probed:.1f} MiB ({probed / sdpa:.3f}x)")
    assert sdpa > 20  # the forward's activations are visible in the measurement
    assert probed <= 1.25 * sdpa


# ------------------------------------------------------------------------- accumulator
def maps(n, seed=0, shape=(3, 4)):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g) for _ in range(n)]


def test_accumulator_mean_std_and_tasks():
    xs = maps(5)
    acc = RamAccumulator(3, 4)
    for i, x in enumerate(xs):
        acc.add(x, task="ref" if i < 2 else "doc")
    stack = torch.stack(xs)
    torch.testing.assert_close(acc.mean(), stack.mean(0))
    torch.testing.assert_close(acc.std(), stack.std(0))  # unbiased, like torch
    torch.testing.assert_close(acc.mean("ref"), stack[:2].mean(0))
    torch.testing.assert_close(acc.samples("doc"), stack[2:])
    assert acc.tasks == ["doc", "ref"] and acc.count() == 5 and acc.count("ref") == 2
    assert acc.sample_tasks == ["ref", "ref", "doc", "doc", "doc"]
    assert acc.mean().dtype == torch.float32 and acc.std().dtype == torch.float32
    single = RamAccumulator()
    single.add(xs[0])
    assert torch.equal(single.std(), torch.zeros(3, 4)) and torch.equal(single.mean(), xs[0])


def test_merge_uses_sums_and_counts_not_means_of_means():
    xs = maps(7, seed=3)
    whole = RamAccumulator()
    for x in xs:
        whole.add(x, task="t")
    shards = [RamAccumulator(), RamAccumulator()]  # unequal shards: 1 and 6 samples
    shards[0].add(xs[0], task="t")
    for x in xs[1:]:
        shards[1].add(x, task="t")
    merged = RamAccumulator.merged(shards)
    torch.testing.assert_close(merged.mean(), whole.mean())
    torch.testing.assert_close(merged.std(), whole.std())
    mean_of_means = (shards[0].mean() + shards[1].mean()) / 2
    assert not torch.allclose(mean_of_means, whole.mean(), atol=1e-3)
    assert merged.count("t") == 7 and torch.equal(merged.samples(), whole.samples())


def test_state_dict_round_trips_without_pickle(tmp_path):
    acc = RamAccumulator()
    for i, x in enumerate(maps(4)):
        acc.add(x, task=None if i == 0 else f"task{i % 2}")
    torch.save(acc.state_dict(), tmp_path / "acc.pt")
    back = RamAccumulator.from_state_dict(torch.load(tmp_path / "acc.pt", weights_only=True))
    acc.save(tmp_path / "acc.safetensors")
    loaded = RamAccumulator.load(tmp_path / "acc.safetensors")
    for other in (back, loaded):
        torch.testing.assert_close(other.mean(), acc.mean(), atol=0, rtol=0)
        torch.testing.assert_close(other.std("task1"), acc.std("task1"), atol=0, rtol=0)
        assert other.sample_tasks == acc.sample_tasks and other.tasks == ["task0", "task1"]
    json.dumps({k: v for k, v in acc.state_dict().items() if not isinstance(v, torch.Tensor)})


def test_to_head_config_carries_tasks_and_counts():
    acc = RamAccumulator()
    xs = maps(3)
    for x, task in zip(xs, ["a", "b", "b"]):
        acc.add(x, task=task)
    cfg = acc.to_head_config(num_kv_heads=2, model_id="tiny", provenance={"command": "test"})
    torch.testing.assert_close(cfg.scores, torch.stack(xs).mean(0))
    torch.testing.assert_close(cfg.dataset_scores["b"], torch.stack(xs[1:]).mean(0))
    assert cfg.provenance == {"command": "test", "num_samples": 3, "samples_per_task": {"a": 1, "b": 2}}


@pytest.mark.parametrize(
    "value,match",
    [(torch.zeros(2, 4), "shape"), (torch.full((3, 4), float("nan")), "NaN"), (torch.zeros(12), "score map")],
    ids=["wrong-shape", "nan", "1-d"],
)
def test_accumulator_rejects_bad_maps(value, match):
    acc = RamAccumulator(3, 4)
    with pytest.raises(ValueError, match=match):
        acc.add(value)
    with pytest.raises(ValueError, match="no samples"):
        acc.mean()


def test_ram_over_dataset_accumulates_per_sample_scores():
    model, _ = text_model()
    samples = []
    for i in range(3):
        ids = text_ids(40, seed=i)
        samples.append({"inputs": {"input_ids": ids}, "query_index": torch.arange(30, 40),
                        "target_index": torch.arange(2 + i, 8 + i), "visual_index": torch.arange(0, 20),
                        "task": "ab"[i % 2]})
    vision = RamAccumulator(keep_samples=False)
    acc = ram_over_dataset(model, samples, vision=vision, progress=False)
    direct = [measure_ram(model, s["inputs"], s["query_index"], s["target_index"], vision_index=s["visual_index"])
              for s in samples]
    torch.testing.assert_close(acc.samples(), torch.stack([d.ram for d in direct]), atol=0, rtol=0)
    torch.testing.assert_close(vision.mean(), torch.stack([d.vision for d in direct]).mean(0))
    assert acc.tasks == ["a", "b"] and acc.count("a") == 2
    with pytest.raises(ValueError, match="sample 0 needs inputs"):
        ram_over_dataset(model, [{"inputs": samples[0]["inputs"]}], progress=False)
