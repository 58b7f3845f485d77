"""Head configs on the Hugging Face Hub: find, download, write and push.

All Hub I/O goes through huggingface_hub, so caching, revisions, tokens (``HF_TOKEN`` or
``hf auth login``), endpoints (``HF_ENDPOINT``) and offline mode (``HF_HUB_OFFLINE=1``) behave
as everywhere else in the ecosystem. Downloads are limited to the files of the format
(``allow_patterns``), and nothing downloaded is ever unpickled.

A head config repo holds
  head_config.json          fields, shape and format stamps (see config.py)
  head_scores.safetensors   float32 [num_layers, num_q_heads] scores (+ per-dataset maps)
  README.md                 model card (card.py); user text outside the generated block is kept
  head_scores.png           heatmap of the scores (when matplotlib is installed)
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import TYPE_CHECKING

from .card import CARD_NAME, HEATMAP_NAME, is_hub_model_id, render_card
from .config import CONFIG_NAME, SCORES_NAME, HeadConfig

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

HUB_FILES = (CONFIG_NAME, SCORES_NAME, CARD_NAME, HEATMAP_NAME)
LOAD_FILES = (CONFIG_NAME, SCORES_NAME)


def is_repo_id(name: str | os.PathLike) -> bool:
    """True if ``name`` can be a Hub repo id ("org/name" or "name"); a PathLike never is."""
    if not isinstance(name, str) or not name or name.count("/") > 1:
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)


def download_head_config(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    include_card: bool = False,
) -> str:
    """Download (or find in the cache) the files of a head config repo; return their folder.

    Only head_config.json and head_scores.safetensors are fetched (plus README.md and the
    heatmap with ``include_card``), all at one commit. Errors are huggingface_hub's own
    (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError offline with an
    empty cache, ...); a repo without head_config.json raises FileNotFoundError.
    """
    from huggingface_hub import snapshot_download

    names = HUB_FILES if include_card else LOAD_FILES
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = snapshot_download(
            repo_id,
            repo_type="model",
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
            allow_patterns=[prefix + name for name in names],
            library_name="core-attn",
        )
    except Exception as e:
        _add_note(e, f"while fetching the head config repo {repo_id!r} (revision {revision or 'main'})")
        raise
    folder = os.path.join(root, subfolder) if subfolder else root
    if not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        where = f"{repo_id!r} (revision {revision or 'main'}{', subfolder ' + repr(subfolder) if subfolder else ''})"
        raise FileNotFoundError(
            f"{where} has no {CONFIG_NAME}: it is not a core-attn head config repo. Expected "
            f"{CONFIG_NAME} and {SCORES_NAME}, as written by HeadConfig.push_to_hub / `core-attn push`"
        )
    return folder


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> str:
    """The local folder holding a head config: ``name_or_path`` itself, or its Hub download."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        folder = os.path.join(path, subfolder) if subfolder else path
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"no subfolder {subfolder!r} in the head config folder {path!r}")
        return folder
    if os.path.exists(path):
        raise FileNotFoundError(f"expected a head config folder or a Hub repo id, found the file {path!r}")
    if not is_repo_id(name_or_path):
        raise FileNotFoundError(f"no head config folder at {path!r} (and it is not a Hub repo id like 'org/name')")
    return download_head_config(
        path,
        revision=revision,
        subfolder=subfolder,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        force_download=force_download,
    )


def write_heatmap(config: HeadConfig, path: str | os.PathLike, *, top_k: int = 20) -> bool:
    """Draw the [num_layers, num_q_heads] score heatmap to ``path``; False if matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    try:
        from ..analysis import plots
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("core_attn"):
            return False
        raise
    title = f"{config.metric} per head, {config.model_id or 'head config'}"
    plots.ram_heatmap(config.scores, top_k=min(top_k, config.num_heads_total), title=title,
                      label=config.metric, path=path)
    return True


def write_hub_folder(
    config: HeadConfig,
    folder: str | os.PathLike,
    *,
    reference: str | None = None,
    existing_card: str | None = None,
    heatmap: bool = True,
    top_k: int = 20,
) -> list[str]:
    """Write every file of the Hub format into ``folder``; return their names.

    Args:
        config: the head config.
        folder: created if missing. Its README.md, if any, is the base of the new card unless
            ``existing_card`` is given (text outside the generated block is kept either way).
        reference: the repo id the card's usage snippet loads (None: the index lookup).
        existing_card: README.md text to merge into (e.g. the one already on the Hub).
        heatmap: draw head_scores.png (skipped without matplotlib).
        top_k: heads in the card's table and outlined in the heatmap.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    card_path = os.path.join(folder, CARD_NAME)
    if existing_card is None and os.path.isfile(card_path):
        with open(card_path, encoding="utf-8") as f:
            existing_card = f.read()
    # Render once before writing anything: a card with broken markers raises here, folder untouched.
    text = render_card(config, existing=existing_card, reference=reference, heatmap=None, top_k=top_k)
    config.save_pretrained(folder)
    written = [CONFIG_NAME, SCORES_NAME]
    if heatmap and write_heatmap(config, os.path.join(folder, HEATMAP_NAME), top_k=top_k):
        written.append(HEATMAP_NAME)
        text = render_card(config, existing=existing_card, reference=reference, heatmap=HEATMAP_NAME, top_k=top_k)
    with open(card_path, "w", encoding="utf-8") as f:
        f.write(text)
    written.append(CARD_NAME)
    return sorted(written)


def push_head_config(
    config: HeadConfig | str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    heatmap: bool = True,
    top_k: int = 20,
) -> CommitInfo:
    """Publish a head config as a Hub model repo (created if missing) in one commit.

    Uploads head_config.json, head_scores.safetensors, README.md and head_scores.png. An
    existing README.md on the Hub (or, for a new repo, in a folder given as ``config``) is the
    base of the new card: only its generated block is replaced and missing metadata added.

    Args:
        config: a HeadConfig, or a local folder written by ``save_pretrained`` /
            ``core-attn extract``.
        repo_id: "org/name" (or "name" for the token's own namespace).
        private: visibility when the repo is created (an existing repo keeps its own).
        token: Hub token; default: huggingface_hub's (``HF_TOKEN`` or the saved login).
        revision: branch to push to (created from main if missing).
        commit_message: default "Upload core-attn head config for <model_id>".
        create_pr: open a pull request instead of committing to the branch.
        heatmap: include head_scores.png (needs matplotlib).
        top_k: heads in the card's table.
    Returns:
        huggingface_hub.CommitInfo of the upload (``.commit_url``, ``.oid``, ``.pr_url``).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    local_card = None
    if not isinstance(config, HeadConfig):
        if not isinstance(config, (str, os.PathLike)) or not os.path.isdir(config):
            raise TypeError(f"config must be a HeadConfig or a local head config folder, got {config!r}")
        card_path = os.path.join(config, CARD_NAME)
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as f:
                local_card = f.read()
        config = HeadConfig.from_pretrained(os.fspath(config))
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if revision is not None and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    try:
        card_file = api.hf_hub_download(repo_id, CARD_NAME, revision=revision, repo_type="model")
        with open(card_file, encoding="utf-8") as f:
            existing = f.read()
    except EntryNotFoundError:
        existing = local_card
    if commit_message is None:
        commit_message = "Upload core-attn head config" + (f" for {config.model_id}" if config.model_id else "")
    with tempfile.TemporaryDirectory(prefix="core-attn-push-") as tmp:
        files = write_hub_folder(
            config, tmp, reference=repo_id, existing_card=existing, heatmap=heatmap, top_k=top_k
        )
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            allow_patterns=files,
        )


__all__ = [
    "HUB_FILES",
    "download_head_config",
    "is_hub_model_id",
    "is_repo_id",
    "push_head_config",
    "resolve_folder",
    "write_heatmap",
    "write_hub_folder",
]
