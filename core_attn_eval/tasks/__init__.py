"""lmms-eval tasks shipped with core-attn: pass this folder as ``--include_path``.

    lmms-eval --include_path "$(core-attn lmms-tasks)" --tasks core_mlvu ...

Task and group names all start with ``core_`` (lmms-eval lets built-in names win over
included ones): ``core_mlvu`` (MLVU dev, one subtask per category) and ``core_videomme``
(Video-MME, one subtask per task family). The RAM tasks ``core_ram_<kind>`` read local records,
so they live in a folder :func:`ram_tasks` writes (by default over the bundled samples).
"""

from __future__ import annotations

import pathlib
import re
import shutil

TASKS_DIR = pathlib.Path(__file__).resolve().parent
TASK_GROUPS = ("core_mlvu", "core_videomme")
_PATH_FIELDS = ("image", "pages", "frames")


def _records_file(path) -> pathlib.Path:
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"records file {path} not found")
    return path


def tasks_path() -> str:
    """The folder to give lmms-eval as ``--include_path`` (core_mlvu, core_videomme)."""
    return str(TASKS_DIR)


def ram_tasks(dest, records: dict[str, str] | None = None) -> str:
    """Write the ``core_ram_<kind>`` tasks to ``dest`` over records of the analysis schema.

    records: kind ("refcocog", "mmlongbench", "mmdocir", "vidstg") -> records.jsonl whose file
    paths are relative to its folder; default: the synthetic samples shipped with core-attn.
    The records are copied with absolute paths. Returns ``dest`` for ``--include_path``.
    """
    import json

    from ..ram import KINDS

    if records is None:
        import core_attn

        samples = pathlib.Path(core_attn.__file__).resolve().parent / "data" / "samples"
        records = {kind: samples / kind / "records.jsonl" for kind in KINDS}
    dest = pathlib.Path(dest) / "core_ram"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("utils.py", "_core_ram_template_yaml"):
        shutil.copy(TASKS_DIR / "core_ram" / name, dest / name)
    for kind, path in records.items():
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
        path = _records_file(path)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            for name in _PATH_FIELDS:
                if isinstance(row.get(name), str):
                    row[name] = str((path.parent / row[name]).resolve())
                elif isinstance(row.get(name), list):
                    row[name] = [str((path.parent / p).resolve()) for p in row[name]]
        local = dest / f"{kind}.jsonl"
        local.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (dest / f"core_ram_{kind}.yaml").write_text(
            "include: _core_ram_template_yaml\n"
            f"task: core_ram_{kind}\n"
            f"dataset_kwargs:\n  data_files:\n    test: {local}\n"
        )
    return str(dest.parent)


def local_tasks(dest, data_files: dict[str, str]) -> str:
    """Copy task groups to ``dest`` reading local JSON / JSON-lines records instead of the Hub.

    data_files: group name (e.g. "core_mlvu") -> path of the records (the dataset's schema;
    a record's optional ``video_path`` is used as its video). Only the named groups are copied.
    Returns ``dest`` as a string, ready for ``--include_path``.
    """
    dest = pathlib.Path(dest)
    for group, records in data_files.items():
        if group not in TASK_GROUPS:
            raise ValueError(f"unknown task group {group!r}; core-attn ships {TASK_GROUPS}")
        records = _records_file(records)
        target = dest / group
        shutil.copytree(TASKS_DIR / group, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        template = target / f"_{group}_template_yaml"
        text = template.read_text()
        # the Hub dataset block (dataset_path + dataset_kwargs) -> the json loader over one file
        local = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {records}\n"
        text, n = re.subn(r"dataset_path: .*?\n(?=test_split:)", local, text, count=1, flags=re.S)
        if n != 1:
            raise RuntimeError(f"{template} has no dataset block to replace")
        template.write_text(text)
    return str(dest)
