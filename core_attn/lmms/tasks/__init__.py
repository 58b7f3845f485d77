"""lmms-eval tasks shipped with core-attn: pass this folder as ``--include_path``.

    lmms-eval --include_path "$(core-attn lmms-tasks)" --tasks core_mlvu ...

Task and group names all start with ``core_`` (lmms-eval lets built-in names win over
included ones): ``core_mlvu`` (MLVU dev, one subtask per category) and ``core_videomme``
(Video-MME, one subtask per task family).
"""

from __future__ import annotations

import pathlib
import re
import shutil

TASKS_DIR = pathlib.Path(__file__).resolve().parent
TASK_GROUPS = ("core_mlvu", "core_videomme")


def tasks_path() -> str:
    """The folder to give lmms-eval as ``--include_path``."""
    return str(TASKS_DIR)


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
        records = pathlib.Path(records).resolve()
        if not records.is_file():
            raise FileNotFoundError(f"records file {records} not found")
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
