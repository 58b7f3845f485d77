"""The sweep's table layout and the task folders (no lmms-eval needed)."""

import csv
import io

import pytest
import yaml

from core_attn_eval.sweep import LAYOUTS, build_table, scores_of, setting_label
from core_attn_eval.tasks import TASK_GROUPS, TASKS_DIR, local_tasks


def test_table_has_paper_columns_and_differences_from_dense():
    results = {key: {"acc,none": 0.5} for _, key in LAYOUTS["core_mlvu"]}
    better = {key: {"acc,none": 0.75} for _, key in LAYOUTS["core_mlvu"]}
    better["core_mlvu_count"] = {"acc,none": 0.25}
    runs = [
        {"setting": "dense", "scores": scores_of("core_mlvu", results), "prefill_mean_s": 2.0, "prefills": 3},
        {"setting": "5%", "scores": scores_of("core_mlvu", better), "prefill_mean_s": 1.0, "prefills": 3},
    ]
    markdown, table = build_table("core_mlvu", runs)
    lines = markdown.splitlines()
    assert lines[0] == "| Setting | TR | AR | NQA | ER | PQA | AO | AC | M-Avg | Prefill s |"
    assert lines[2].startswith("| dense | 50.0 | 50.0 |") and lines[2].endswith("| 2.000 |")
    assert "| 5% | 75.0 (+25.0) |" in lines[3] and "25.0 (-25.0)" in lines[3] and lines[3].endswith("| 1.000 (2.00x) |")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert rows[1]["AC_diff"] == "-25.0" and rows[1]["TR"] == "75.0" and rows[0]["prefill_mean_s"] == "2.0"


def test_missing_category_is_a_dash_not_zero():
    runs = [{"setting": "dense", "scores": scores_of("core_videomme", {"core_videomme": {"acc,none": 0.4}})}]
    markdown, _ = build_table("core_videomme", runs)
    assert markdown.splitlines()[2] == "| dense | - | - | - | - | 40.0 | - |"


def test_labels_and_bad_group():
    assert [setting_label(v) for v in (1.0, 0.05, 0.025, 8)] == ["dense", "5%", "2.5%", "8 heads"]
    with pytest.raises(ValueError, match="no table layout"):
        build_table("mlvu_dev", [{"setting": "dense", "scores": {}}])


def test_task_names_never_reuse_builtin_ones():
    names = []
    for path in TASKS_DIR.rglob("*.yaml"):
        text = yaml.safe_load(path.read_text().replace("!function", ""))
        names.append(text.get("task") if "task" in text and isinstance(text["task"], str) else text.get("group"))
    assert names and all(n.startswith("core_") for n in names)
    assert {n for n in names if n in TASK_GROUPS} == set(TASK_GROUPS)


def test_local_tasks_point_the_template_at_the_records(tmp_path):
    records = tmp_path / "mlvu.json"
    records.write_text("[]")
    out = local_tasks(tmp_path / "tasks", {"core_mlvu": records})
    template = (tmp_path / "tasks" / "core_mlvu" / "_core_mlvu_template_yaml").read_text()
    assert "sy1998" not in template and f"test: {records.resolve()}" in template and "dataset_path: json" in template
    assert out == str(tmp_path / "tasks") and not (tmp_path / "tasks" / "core_videomme").exists()
    with pytest.raises(ValueError, match="unknown task group"):
        local_tasks(tmp_path / "x", {"mlvu": records})
    with pytest.raises(FileNotFoundError):
        local_tasks(tmp_path / "x", {"core_mlvu": tmp_path / "missing.json"})


def test_lmms_tasks_command(tmp_path, capsys):
    import json

    from core_attn.cli import main
    from core_attn_eval.tasks import ram_tasks

    assert main(["lmms-tasks"]) == 0 and capsys.readouterr().out.strip() == str(TASKS_DIR)
    assert main(["lmms-tasks", "--ram", str(tmp_path / "t")]) == 0
    folder = tmp_path / "t" / "core_ram"
    assert sorted(p.name for p in folder.glob("core_ram_*.yaml")) == [
        "core_ram_mmdocir.yaml", "core_ram_mmlongbench.yaml", "core_ram_refcocog.yaml", "core_ram_vidstg.yaml"
    ]
    row = json.loads((folder / "refcocog.jsonl").read_text().splitlines()[0])
    assert row["image"].startswith("/") and __import__("os").path.exists(row["image"])
    assert f"test: {folder / 'refcocog.jsonl'}" in (folder / "core_ram_refcocog.yaml").read_text()
    with pytest.raises(ValueError, match="unknown record kind"):
        ram_tasks(tmp_path / "u", {"coco": folder / "refcocog.jsonl"})
    with pytest.raises(SystemExit, match="KIND=PATH"):
        main(["lmms-tasks", "--ram", str(tmp_path / "v"), "--records", "refcocog"])
