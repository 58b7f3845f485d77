"""HeadConfig: a per-head score map of one model, and the head selection built on it.

On disk a HeadConfig is a folder (locally or as a Hub repo) with
  head_config.json        every field but the tensors (sorted keys, format_version, library version)
  head_scores.safetensors "scores" [L, HQ] float32, plus "dataset/<name>" [L, HQ] per dataset if present
and, when published with :meth:`HeadConfig.push_to_hub`, a README.md model card and a
head_scores.png heatmap. Nothing is ever unpickled.

Format history: 1.0 first release; 1.1 adds ``model_revision`` (a 1.0 reader loads a 1.1 file
with a warning about that key).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

CONFIG_NAME = "head_config.json"
SCORES_NAME = "head_scores.safetensors"
FORMAT_VERSION = "1.1"
GRANULARITIES = ("q", "kv")


def head_label(layer: int, q_head: int) -> str:
    """The label used everywhere for a (layer, q_head) pair, e.g. "L12H3"."""
    return f"L{layer}H{q_head}"


def _check_scores(name: str, scores: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [num_layers, num_q_heads], got {type(scores).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name} must be 2-d [num_layers, num_q_heads], got shape {tuple(scores.shape)}")
    if shape is not None and tuple(scores.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(scores.shape)}, expected [num_layers, num_q_heads] = {list(shape)}")
    if not (scores.is_floating_point() or scores.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got {scores.dtype}")
    scores = scores.detach().to(device="cpu", dtype=torch.float32).contiguous()
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        layer, q_head = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first at {head_label(layer, q_head)}"
        )
    return scores


@dataclass
class HeadConfig:
    """Per-head scores of one model and the settings the hybrid attention uses with them.

    Heads are (layer, q_head) pairs; ``scores[l, h]`` is the score of q_head h of layer l
    (RAM by default: higher = more retrieval). Selection is a global ranking over all layers.
    """

    scores: torch.Tensor = field(metadata={"help": "float32 [num_layers, num_q_heads] score per (layer, q_head)."})
    num_kv_heads: int = field(metadata={"help": "kv_heads per layer; num_q_heads must be a multiple of it."})
    model_id: str | None = field(default=None, metadata={"help": "Model the scores were measured on (Hub id or path)."})
    sink_size: int = field(default=128, metadata={"help": "Default attention-sink tokens of a streaming head."})
    window_size: int = field(default=1024, metadata={"help": "Default sliding-window length of a streaming head."})
    metric: str = field(default="ram", metadata={"help": "Name of the score: 'ram' (retrieval attention mass), ..."})
    provenance: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Free-form JSON about how the scores were obtained. Conventional keys: 'datasets' "
            "({name: number of samples}), 'command', 'library_version', 'torch_version'."
        },
    )
    dataset_scores: dict[str, torch.Tensor] = field(
        default_factory=dict, metadata={"help": "Optional per-dataset score maps, each [num_layers, num_q_heads]."}
    )
    model_revision: str | None = field(
        default=None,
        metadata={"help": "Revision of model_id the scores were measured on (commit sha, branch or tag)."},
    )

    def __post_init__(self) -> None:
        self.scores = _check_scores("scores", self.scores)
        shape = tuple(self.scores.shape)
        if isinstance(self.num_kv_heads, bool) or not isinstance(self.num_kv_heads, int) or self.num_kv_heads < 1:
            raise ValueError(f"num_kv_heads must be a positive int, got {self.num_kv_heads!r}")
        if self.num_q_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        for name in ("sink_size", "window_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        for name in ("model_id", "model_revision"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{name} must be a str or None, got {type(v).__name__}")
        if not isinstance(self.provenance, dict):
            raise TypeError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        self.dataset_scores = {
            str(k): _check_scores(f"dataset_scores[{k!r}]", v, shape) for k, v in self.dataset_scores.items()
        }

    # ------------------------------------------------------------------ shape
    @property
    def num_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_q_heads(self) -> int:
        return int(self.scores.shape[1])

    @property
    def num_heads_total(self) -> int:
        return self.num_layers * self.num_q_heads

    @classmethod
    def from_scores(
        cls, scores: torch.Tensor, *, num_kv_heads: int | None = None, model_id: str | None = None, **kwargs
    ) -> "HeadConfig":
        """Build from a [num_layers, num_q_heads] score tensor (num_kv_heads defaults to num_q_heads)."""
        if isinstance(scores, torch.Tensor) and scores.dim() == 2 and num_kv_heads is None:
            num_kv_heads = int(scores.shape[1])
        return cls(scores=scores, num_kv_heads=num_kv_heads, model_id=model_id, **kwargs)

    # -------------------------------------------------------------- selection
    def ranking(self, granularity: str = "q") -> torch.Tensor:
        """Heads sorted best first, as long [N, 2] rows of (layer, q_head) or (layer, kv_head).

        Ties are broken deterministically by (layer, head) order.
        """
        scores = self._scores_at(granularity)
        order = torch.sort(scores.flatten(), descending=True, stable=True).indices
        n_heads = scores.shape[1]
        return torch.stack([order // n_heads, order % n_heads], dim=1)

    def top_heads(self, k: int) -> list[str]:
        """Labels ("L{l}H{h}") of the k best q_heads."""
        return [head_label(int(l), int(h)) for l, h in self.ranking()[:k]]

    def num_selected(self, dense: float | int, granularity: str = "q") -> int:
        """How many heads (q_heads, or kv_heads for granularity "kv") a dense setting keeps."""
        total = self.num_layers * (self.num_q_heads if granularity == "q" else self.num_kv_heads)
        if isinstance(dense, bool) or not isinstance(dense, (int, float)):
            raise TypeError(f"dense must be a float fraction in (0, 1] or an int head count, got {dense!r}")
        if isinstance(dense, float):
            if not (0.0 < dense <= 1.0) or math.isnan(dense):
                raise ValueError(
                    f"dense as a float is a fraction of heads and must be in (0, 1], got {dense}; "
                    "pass an int for a head count"
                )
            return min(total, math.ceil(dense * total - 1e-9))
        if not (0 <= dense <= total):
            unit = "q_heads" if granularity == "q" else "kv_heads"
            raise ValueError(f"dense as an int is a count of {unit} and must be in [0, {total}], got {dense}")
        return dense

    def dense_mask(self, dense: float | int, granularity: str = "q") -> torch.Tensor:
        """bool [num_layers, num_q_heads]: True for the q_heads kept on full attention.

        Args:
            dense: a float fraction in (0, 1] of all heads (rounded up), or an int count.
            granularity: "q" ranks q_heads; "kv" ranks kv_heads by the mean score of their
                q_head group and keeps whole groups dense (dense then counts kv_heads).
        """
        k = self.num_selected(dense, granularity)
        chosen = self.ranking(granularity)[:k]
        if granularity == "q":
            mask = torch.zeros(self.num_layers, self.num_q_heads, dtype=torch.bool)
            mask[chosen[:, 0], chosen[:, 1]] = True
            return mask
        mask = torch.zeros(self.num_layers, self.num_kv_heads, dtype=torch.bool)
        mask[chosen[:, 0], chosen[:, 1]] = True
        return mask.repeat_interleave(self.num_q_heads // self.num_kv_heads, dim=1)

    def _scores_at(self, granularity: str) -> torch.Tensor:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if granularity == "q":
            return self.scores
        group = self.num_q_heads // self.num_kv_heads
        return self.scores.view(self.num_layers, self.num_kv_heads, group).mean(dim=-1)

    # ------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (no tensors) plus the shape and format stamps."""
        from .. import __version__

        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("scores", "dataset_scores")
        }
        data.update(
            format_version=FORMAT_VERSION,
            library="core-attn",
            library_version=__version__,
            num_layers=self.num_layers,
            num_q_heads=self.num_q_heads,
            datasets=sorted(self.dataset_scores),
        )
        return data

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write head_config.json and head_scores.safetensors into save_directory."""
        from safetensors.torch import save_file

        try:  # serialise first: an unserialisable provenance must not leave half a folder behind
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as e:
            raise ValueError(f"head config fields must be JSON-serialisable (check provenance): {e}") from e
        os.makedirs(save_directory, exist_ok=True)
        tensors = {"scores": self.scores}
        tensors.update({f"dataset/{name}": t for name, t in self.dataset_scores.items()})
        save_file(tensors, os.path.join(save_directory, SCORES_NAME), metadata={"format": "pt"})
        with open(os.path.join(save_directory, CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(text)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> "HeadConfig":
        """Load from a local folder or a Hugging Face Hub repo.

        Args:
            name_or_path: a folder written by :meth:`save_pretrained` / :meth:`push_to_hub`, or a
                Hub repo id ("org/name"). An existing local folder wins over a repo of that name;
                a ``pathlib.Path`` is always a local folder.
            revision: branch, tag or commit sha of the Hub repo (ignored for a local folder).
            subfolder: folder inside the folder / repo that holds the files.
            cache_dir, token, local_files_only, force_download: passed to huggingface_hub
                (``HF_HUB_OFFLINE=1`` and ``HF_TOKEN`` apply as usual).

        Only head_config.json and head_scores.safetensors are read (nothing is unpickled).
        Scores come back as float32 [num_layers, num_q_heads].
        """
        from .hub import resolve_folder

        folder = resolve_folder(
            name_or_path,
            revision=revision,
            subfolder=subfolder,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        return cls._from_files(os.path.join(folder, CONFIG_NAME), os.path.join(folder, SCORES_NAME))

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload to a Hub repo (head_config.json, head_scores.safetensors, README.md, heatmap).

        Same as ``core_attn.push_head_config(self, repo_id, **kwargs)``; see there for the options
        (private, revision, token, commit_message, create_pr, ...). Returns huggingface_hub's CommitInfo.
        """
        from .hub import push_head_config

        return push_head_config(self, repo_id, **kwargs)

    @classmethod
    def _from_files(cls, config_file: str, scores_file: str) -> "HeadConfig":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        for p in (config_file, scores_file):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"head config is incomplete: {os.path.basename(p)} is missing ({p})")
        with open(config_file, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_file} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{config_file} must hold a JSON object, found {type(data).__name__}")
        version = str(data.pop("format_version", FORMAT_VERSION))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise ValueError(
                f"{config_file} has format_version {version!r}, expected 'MAJOR.MINOR' (e.g. {FORMAT_VERSION!r})"
            ) from None
        if major > int(FORMAT_VERSION.split(".")[0]):
            raise ValueError(
                f"{config_file} has format_version {version}, newer than this core-attn reads ({FORMAT_VERSION}): "
                "upgrade core-attn"
            )
        try:
            tensors = load_file(scores_file)
        except SafetensorError as e:
            raise ValueError(f"{scores_file} is not a valid safetensors file: {e}") from e
        if "scores" not in tensors:
            raise ValueError(f"{scores_file} has no 'scores' tensor (found {sorted(tensors)})")
        stamps = ("num_layers", "num_q_heads", "library", "library_version", "datasets")
        stamped = {k: data.pop(k, None) for k in stamps}
        shape = (stamped["num_layers"], stamped["num_q_heads"])
        if None not in shape and tuple(tensors["scores"].shape) != shape:
            raise ValueError(
                f"{scores_file}: scores have shape {tuple(tensors['scores'].shape)} but {config_file} says "
                f"num_layers={shape[0]}, num_q_heads={shape[1]}"
            )
        dataset_scores = {k[len("dataset/") :]: v for k, v in tensors.items() if k.startswith("dataset/")}
        listed = stamped["datasets"]
        if isinstance(listed, list) and sorted(map(str, listed)) != sorted(dataset_scores):
            raise ValueError(
                f"{config_file} lists per-dataset scores {sorted(map(str, listed))} but {scores_file} holds "
                f"{sorted(dataset_scores)}"
            )
        other = sorted(k for k in tensors if k != "scores" and not k.startswith("dataset/"))
        if other:
            warnings.warn(f"{scores_file}: ignoring unknown tensors {other}", stacklevel=3)
        if "num_kv_heads" not in data:
            raise ValueError(f"{config_file} has no num_kv_heads (expected an int, kv_heads per layer)")
        known = {f.name for f in dataclasses.fields(cls)} - {"scores", "dataset_scores"}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"{config_file}: ignoring unknown keys {unknown} (written by a newer core-attn?)", stacklevel=3
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(scores=tensors["scores"], dataset_scores=dataset_scores, **kwargs)

    def __repr__(self) -> str:
        return (
            f"HeadConfig(model_id={self.model_id!r}, layers={self.num_layers}, q_heads={self.num_q_heads}, "
            f"kv_heads={self.num_kv_heads}, metric={self.metric!r}, sink={self.sink_size}, "
            f"window={self.window_size}, top={self.top_heads(min(5, self.num_heads_total))})"
        )
