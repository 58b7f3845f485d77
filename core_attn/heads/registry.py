"""The index of published head rankings, and finding the one for a model.

core-attn ships ``core_attn/head_configs/`` as package data: one folder per model in the Hub
format (see hub.py) and ``index.json``::

    {
      "format_version": "1.0",
      "models": {
        "<model id>": {"path": "<bundled folder>", "method": "...", "how": "..."},
        "<model id>": {"repo_id": "org/name", "revision": "<commit sha>", "method": "...", "how": "..."}
      }
    }

Each entry points either to a bundled folder (``path``, relative to the index) or to a Hub
repo (``repo_id``, optional ``revision`` and ``subfolder``), and says how the ranking was
obtained (``method``: e.g. "ram" for measured retrieval attention mass; ``how``: the command
or construction, in words).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .card import is_hub_model_id
from .config import HeadConfig

INDEX_NAME = "index.json"
INDEX_FORMAT_VERSION = "1.0"
_ENTRY_KEYS = {"path", "repo_id", "revision", "subfolder", "method", "how"}


def bundled_dir() -> Path:
    """The folder of the bundled head configs (``core_attn/head_configs``), installed or not."""
    from importlib.resources import files

    return Path(str(files("core_attn"))) / "head_configs"


@dataclass(frozen=True)
class IndexEntry:
    """One published ranking: a bundled folder or a Hub repo, and how it was obtained."""

    model_id: str
    method: str
    how: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    subfolder: str | None = None

    @property
    def source(self) -> str:
        """Where the files are, for messages: the folder, or "org/name@revision"."""
        if self.path is not None:
            return str(self.path)
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

    def load(self, **hub_kwargs) -> HeadConfig:
        """The HeadConfig (hub_kwargs: cache_dir, token, local_files_only for Hub entries)."""
        try:
            if self.path is not None:
                return HeadConfig.from_pretrained(self.path)
            return HeadConfig.from_pretrained(
                self.repo_id, revision=self.revision, subfolder=self.subfolder, **hub_kwargs
            )
        except Exception as e:
            if hasattr(e, "add_note"):
                e.add_note(f"while loading the published head config of {self.model_id} from {self.source}")
            raise


def _entry(model_id: str, raw, root: Path, index_file: str) -> IndexEntry:
    where = f"{index_file}: entry {model_id!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a JSON object, found {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown} (expected some of {sorted(_ENTRY_KEYS)})")
    if ("path" in raw) == ("repo_id" in raw):
        raise ValueError(f"{where} needs exactly one of 'path' (bundled folder) and 'repo_id' (Hub repo)")
    for key in ("method", "how"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{where} needs a non-empty string {key!r} saying how the ranking was obtained")
    for key in ("path", "repo_id", "revision", "subfolder"):
        if key in raw and not isinstance(raw[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, found {type(raw[key]).__name__}")
    path = None
    if "path" in raw:
        rel = Path(raw["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{where}: 'path' must be a folder inside {root}, found {raw['path']!r}")
        path = root / rel
    return IndexEntry(
        model_id=model_id,
        method=raw["method"],
        how=raw["how"],
        path=path,
        repo_id=raw.get("repo_id"),
        revision=raw.get("revision"),
        subfolder=raw.get("subfolder"),
    )


def load_index(path: str | os.PathLike | None = None) -> dict[str, IndexEntry]:
    """{model id: IndexEntry} from an index.json (default: the bundled one), validated."""
    index_file = Path(path) if path is not None else bundled_dir() / INDEX_NAME
    with open(index_file, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{index_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f"{index_file} must be a JSON object with a 'models' object")
    version = str(data.get("format_version", INDEX_FORMAT_VERSION))
    if version.split(".")[0] != INDEX_FORMAT_VERSION.split(".")[0]:
        raise ValueError(
            f"{index_file} has format_version {version}, this core-attn reads {INDEX_FORMAT_VERSION}: upgrade core-attn"
        )
    root = index_file.parent
    return {mid: _entry(mid, raw, root, str(index_file)) for mid, raw in data["models"].items()}


def model_names(model) -> list[str]:
    """Names a transformers model is known by: config._name_or_path and its text config's."""
    from ..hf.attach import text_config_of

    names = []
    for cfg in (getattr(model, "config", None), text_config_of(model)):
        name = getattr(cfg, "_name_or_path", None) or getattr(cfg, "name_or_path", None)
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def _cache_repo_id(name: str) -> str | None:
    """"org/name" from a Hugging Face cache path (.../models--org--name/snapshots/<sha>)."""
    for part in Path(name).parts:
        if part.startswith("models--"):
            return "/".join(part[len("models--") :].split("--"))
    return None


def find_entry(names: Iterable[str], index: dict[str, IndexEntry] | None = None) -> IndexEntry | None:
    """The index entry for the first of ``names`` that has one.

    A name matches a model id exactly, or, when it is a local path rather than a Hub id, through
    the repo id in a Hugging Face cache path (.../models--org--name/...) or a final folder name
    equal to the name part of exactly one model id (case-insensitive).
    """
    index = load_index() if index is None else index
    names = [n for n in names if n]
    for name in names:
        if name in index:
            return index[name]
    lowered = {mid.lower(): entry for mid, entry in index.items()}
    for name in names:
        if is_hub_model_id(name) and not os.path.exists(name):
            continue  # another Hub model, not a local copy of one in the index
        cached = _cache_repo_id(name)
        if cached and cached.lower() in lowered:
            return lowered[cached.lower()]
        base = Path(name.rstrip("/\\")).name.lower()
        hits = [entry for mid, entry in index.items() if mid.split("/")[-1].lower() == base]
        if base and len(hits) == 1:
            return hits[0]
    return None


def head_config_for_model(model, *, index: dict[str, IndexEntry] | None = None, **hub_kwargs) -> HeadConfig:
    """The published head config of ``model``, looked up by its names in the index.

    Raises:
        ValueError: no entry: the message says how to get a head config.
    """
    names = model_names(model)
    index = load_index() if index is None else index
    entry = find_entry(names, index)
    if entry is not None:
        return entry.load(**hub_kwargs)
    shown = ", ".join(repr(n) for n in names) or "none (model.config._name_or_path is empty)"
    model_arg = next((n for n in names if "/" in n), names[0] if names else "MODEL")
    raise ValueError(
        "attach() got no head config, and core-attn's index of published head rankings has no entry for this "
        f"model (names looked up: {shown}; index entries: {', '.join(sorted(index)) or 'none'}). "
        "Get a head config by either\n"
        f"  - measuring one: core-attn extract --model {model_arg} --data DATA --out heads/  "
        "then attach(model, \"heads/\", dense=...), or\n"
        "  - passing a published one: attach(model, \"org/name\", dense=...) with a Hub repo id or a local folder "
        "(`core-attn show org/name` prints what a repo holds)"
    )


def list_entries(index: dict[str, IndexEntry] | None = None) -> list[IndexEntry]:
    """All index entries, sorted by model id."""
    index = load_index() if index is None else index
    return [index[k] for k in sorted(index)]


__all__ = [
    "INDEX_NAME",
    "IndexEntry",
    "bundled_dir",
    "find_entry",
    "head_config_for_model",
    "list_entries",
    "load_index",
    "model_names",
]
