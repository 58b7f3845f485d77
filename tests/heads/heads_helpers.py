"""Helpers for the head config tests: configs, a Hugging Face cache layout, a tiny text model."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import core_attn

LAYERS, HQ, HKV = 3, 4, 2
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_2 = "89abcdef0123456789abcdef0123456789abcdef"


def make_config(seed: int = 0, layers: int = LAYERS, hq: int = HQ, hkv: int = HKV, **kwargs) -> core_attn.HeadConfig:
    """A HeadConfig with every field set (override any with kwargs)."""
    g = torch.Generator().manual_seed(seed)
    fields = dict(
        model_id="someorg/tiny-text",
        model_revision="abc1234",
        sink_size=2,
        window_size=8,
        metric="ram",
        provenance={"command": "core-attn extract", "datasets": {"refcocog": 12, "mmdocir": 5}},
        dataset_scores={
            "refcocog": torch.rand(layers, hq, generator=g),
            "mmdocir": torch.rand(layers, hq, generator=g),
        },
    )
    fields.update(kwargs)
    return core_attn.HeadConfig.from_scores(torch.rand(layers, hq, generator=g), num_kv_heads=hkv, **fields)


def populate_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, refs=("main",)) -> Path:
    """Lay ``folder``'s files out as huggingface_hub's cache does after a download of ``repo_id``.

    <cache>/models--org--name/{refs/<ref> = commit, snapshots/<commit>/<files>} (plain files
    instead of symlinks into blobs/, which huggingface_hub also reads).
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in Path(folder).iterdir():
        if f.is_file():
            shutil.copy(f, snapshot / f.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def tiny_text_model(name: str = "someorg/tiny-text", layers: int = LAYERS):
    """A random-weight Qwen3ForCausalLM with ``layers`` x HQ q_heads (HKV kv_heads), called ``name``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=HQ,
        num_key_value_heads=HKV,
        head_dim=8,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    model.config._name_or_path = name
    return model
