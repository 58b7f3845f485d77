"""End to end through real lmms-eval (simple_evaluate, TaskManager, the model registry), offline on CPU.

The built-in Qwen3-VL / LLaVA / InternVL classes need a processor whose video half requires
torchvision, which has no CPU build on PyPI; so the end-to-end runs here use a small lmms-eval
model over a tiny random Qwen3-VL (TinyQwen3VL below) with the same CoreAttnModel mixin the
core_* classes use, while the registry test checks that the core_* names resolve to the
classes extending lmms-eval's own.
"""

import json

import pytest
import torch

pytestmark = pytest.mark.lmms_eval

CATEGORIES = ["topic_reasoning", "anomaly_reco", "needle", "ego", "plotQA", "order", "count"]


@pytest.fixture(scope="module")
def lmms():
    """lmms-eval's evaluator, model base class and TaskManager, with the Hub and datasets offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        from lmms_eval import evaluator
        from lmms_eval.api.model import lmms as lmms_base
        from lmms_eval.tasks import TaskManager

        yield evaluator, lmms_base, TaskManager


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import core_attn
    from core_attn.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    build_tiny_model("qwen3_vl", seed=0, save_dir=str(root / "model"))
    scores = torch.rand(4, 4, generator=torch.Generator().manual_seed(3))
    core_attn.HeadConfig.from_scores(scores, num_kv_heads=2, model_id="tiny", sink_size=1, window_size=3).save_pretrained(root / "heads")
    return root


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """core_mlvu over a local json in MLVU's schema: 2 questions per category, real category names."""
    from core_attn_eval.tasks import local_tasks

    root = tmp_path_factory.mktemp("mlvu")
    records = []
    for i, category in enumerate(CATEGORIES * 2):
        records.append(
            {
                "video_name": f"{category}_{i}.mp4",
                "video_path": str(root / "videos" / f"{category}_{i}.mp4"),
                "duration": 60.0,
                "question": f"Question {i} about {category}?\n(A) one\n(B) two\n(C) three\n(D) four",
                "candidates": ["one", "two", "three", "four"],
                "answer": "ABCD"[i % 4],
                "task_type": category,
                "question_id": f"q{i}",
            }
        )
    (root / "videos").mkdir()
    for r in records:
        open(r["video_path"], "wb").close()  # the tiny model reads no frames; the path must exist
    (root / "mlvu.json").write_text(json.dumps(records))
    return local_tasks(root / "tasks", {"core_mlvu": root / "mlvu.json"})


def tiny_model_classes(lmms_base):
    from core_attn.data.tiny_processor import TinyProcessor
    from core_attn_eval.models._mixin import CoreAttnModel
    from core_attn.testing.tiny_models import make_inputs
    from transformers import AutoModelForImageTextToText

    class TinyQwen3VL(lmms_base):
        """A stand-in for lmms-eval's Qwen3_VL: prompt text -> token ids (no tokenizer), one image, greedy letters."""

        def __init__(self, pretrained, attn_implementation="sdpa", device="cpu", batch_size=1, **kwargs):
            super().__init__()
            assert kwargs == {}, f"Unexpected kwargs: {kwargs}"
            self._model = AutoModelForImageTextToText.from_pretrained(pretrained, attn_implementation=attn_implementation).eval()
            self.processor = TinyProcessor("qwen3_vl", self._model.config)  # encodes RAM records

        @property
        def model(self):
            return self._model

        def generate_until(self, requests):
            answers = []
            for request in requests:
                context = request.args[0]
                seed = sum(map(ord, context)) % 10_000
                inputs = make_inputs("qwen3_vl", self._model.config, text_len=40, seed=seed)
                with torch.no_grad():
                    out = self._model.generate(**inputs.model_inputs, max_new_tokens=2, do_sample=False)
                answers.append("ABCD"[int(out[0, -1]) % 4])
            return answers

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    class CoreTinyQwen3VL(CoreAttnModel, TinyQwen3VL):
        pass

    return TinyQwen3VL, CoreTinyQwen3VL


def evaluate(lmms, model, tasks_dir):
    evaluator, _, TaskManager = lmms
    manager = TaskManager(include_path=tasks_dir, include_defaults=False, model_name="core_tiny")
    return evaluator.simple_evaluate(model=model, tasks=["core_mlvu"], task_manager=manager, bootstrap_iters=0, log_samples=True)


def answers(out):
    return {task: [s["resps"] for s in samples] for task, samples in out["samples"].items()}


def test_core_names_resolve_to_classes_extending_lmms_evals_own(lmms):
    from lmms_eval.models import get_model

    from core_attn_eval.manifest import MODELS

    for name, (simple, chat) in MODELS.items():
        try:
            cls = get_model(name)
        except (ImportError, ModuleNotFoundError) as e:  # a built-in module needing what this machine lacks
            pytest.skip(f"{name}: lmms-eval's own class does not import here: {e}")
        assert f"{cls.__module__}.{cls.__qualname__}" == (chat or simple)
        assert cls.__mro__[1].__name__ == "CoreAttnModel"
        assert cls.__mro__[2].__module__.startswith("lmms_eval.models.")


def test_dense_baseline_and_hybrid_both_score_every_category(lmms, tiny_dir, tasks_dir):
    import core_attn

    _, lmms_base, _ = lmms
    Plain, Core = tiny_model_classes(lmms_base)
    model_dir, heads = str(tiny_dir / "model"), str(tiny_dir / "heads")

    plain = evaluate(lmms, Plain(pretrained=model_dir), tasks_dir)
    dense = evaluate(lmms, Core(pretrained=model_dir, head_config=heads, dense=1.0), tasks_dir)
    hybrid_model = Core(pretrained=model_dir, head_config=heads, dense=0.05, sink=1, window=3)
    attached = core_attn.attached_settings(hybrid_model.model)
    assert attached["window_size"] == 3 and attached["sink_size"] == 1
    hybrid = evaluate(lmms, hybrid_model, tasks_dir)

    for out in (dense, hybrid):
        for category in CATEGORIES:
            assert 0.0 <= out["results"][f"core_mlvu_{category}"]["acc,none"] <= 1.0
        assert "acc,none" in out["results"]["core_mlvu"]
    assert answers(dense) == answers(plain)  # dense=1.0 is the plain model, answer for answer
    report = hybrid_model.core_report()
    assert report["prefills"] == 14 and len(report["dense_heads"]) == 1  # ceil(5% of 16 heads)


def test_ablation_args_choose_the_silenced_heads(lmms, tiny_dir):
    import core_attn

    _, lmms_base, _ = lmms
    _, Core = tiny_model_classes(lmms_base)
    heads = str(tiny_dir / "heads")
    config = core_attn.HeadConfig.from_pretrained(heads)
    top = Core(pretrained=str(tiny_dir / "model"), head_config=heads, ablate="top", ablate_k=2)
    bottom = Core(pretrained=str(tiny_dir / "model"), head_config=heads, ablate="bottom", ablate_k=2)
    label = lambda pairs: sorted(f"L{l}H{h}" for l, h in pairs)  # noqa: E731
    assert top.core_report()["ablated_heads"] == label(core_attn.select_heads(config, "top", 2))
    assert bottom.core_report()["ablated_heads"] == label(core_attn.select_heads(config, "bottom", 2))
    assert top.core_report()["ablated_heads"] != bottom.core_report()["ablated_heads"]


def test_sweep_writes_the_table(lmms, tiny_dir, tasks_dir, tmp_path):
    from core_attn_eval import sweep

    _, lmms_base, _ = lmms
    _, Core = tiny_model_classes(lmms_base)
    runs = sweep.run_sweep(
        "core_tiny", f"pretrained={tiny_dir / 'model'},head_config={tiny_dir / 'heads'},sink=1,window=3",
        "core_mlvu", [0.25, 0.05], include_path=tasks_dir, output=tmp_path / "out", model_class=Core,
    )
    assert [r["setting"] for r in runs] == ["dense", "25%", "5%"]
    table = (tmp_path / "out" / "core_mlvu.md").read_text().splitlines()
    assert table[0].startswith("| Setting | TR | AR | NQA | ER | PQA | AO | AC | M-Avg | Prefill s |")
    assert len(table) == 5 and all(r["prefills"] == 14 and r["prefill_mean_s"] > 0 for r in runs)
    assert (tmp_path / "out" / "core_mlvu.csv").exists() and (tmp_path / "out" / "core_mlvu.json").exists()
    with pytest.raises(ValueError, match="must not set dense"):
        sweep.run_sweep("core_tiny", "dense=0.5", "core_mlvu", [0.1], include_path=tasks_dir, output=tmp_path / "x", model_class=Core)


def test_ram_tasks_write_head_configs_equal_to_the_analysis_pipeline(lmms, tiny_dir, tmp_path):
    """core_ram_<kind> through lmms-eval gives the same mean RAM as ram_over_dataset on the same records."""
    import core_attn
    from core_attn.analysis.data import SampleBuilder, load_records
    from core_attn_eval.ram import KINDS
    from core_attn_eval.tasks import ram_tasks

    evaluator, lmms_base, TaskManager = lmms
    _, Core = tiny_model_classes(lmms_base)
    include = ram_tasks(tmp_path / "tasks")
    out = tmp_path / "ram"
    model = Core(pretrained=str(tiny_dir / "model"), ram_output=str(out))
    hf_model = model.model  # lmms-eval drops the wrapper's reference after a run
    manager = TaskManager(include_path=include, include_defaults=False, model_name="core_tiny")
    results = evaluator.simple_evaluate(
        model=model, tasks=[f"core_ram_{k}" for k in KINDS], task_manager=manager, bootstrap_iters=0
    )
    builder = SampleBuilder.for_tiny(hf_model.config)
    for kind in KINDS:
        saved = core_attn.HeadConfig.from_pretrained(out / kind)
        records = load_records(tmp_path / "tasks" / "core_ram" / f"{kind}.jsonl", kind)
        direct = core_attn.ram_over_dataset(hf_model, builder.samples(records), progress=False)
        torch.testing.assert_close(saved.scores, direct.mean(), rtol=1e-5, atol=1e-6)
        assert saved.provenance["datasets"] == {kind: len(records)} and saved.metric == "ram"
        assert core_attn.HeadConfig.from_pretrained(out / f"{kind}-vision").metric == "vision_mass"
        assert results["results"][f"core_ram_{kind}"]["ram,none"] == pytest.approx(float(direct.mean().max()))


def test_ram_task_with_a_generating_model_fails_clearly(lmms):
    from core_attn_eval.ram import parse_response

    with pytest.raises(ValueError, match="needs a core_"):
        parse_response("B")
