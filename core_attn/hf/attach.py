"""attach() / detach(): put a head selection on a transformers model.

The selection lives on the model's text config as a small JSON dict (attribute
``core_attn``), which the "core_hybrid" attention function reads per layer. Because it is a
config attribute it is saved with ``save_pretrained`` and comes back with
``from_pretrained(..., attn_implementation="core_hybrid")``.
"""

from __future__ import annotations

import os

import torch

from ..heads.config import HeadConfig
from .attention import ATTN_IMPLEMENTATION, SETTINGS_ATTR

DECODE_MODES = ("dense", "hybrid")


def text_config_of(model) -> object:
    """The config of the causal text decoder (the model's own config for text-only models)."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    return config.get_text_config(decoder=True)


def model_head_shape(model) -> tuple[int, int, int]:
    """(num_layers, num_q_heads, num_kv_heads) of the model's text decoder."""
    tc = text_config_of(model)
    hq = int(tc.num_attention_heads)
    hkv = getattr(tc, "num_key_value_heads", None)
    return int(tc.num_hidden_layers), hq, int(hkv) if hkv is not None else hq


def check_compatible(config: HeadConfig, model) -> None:
    """Raise ValueError naming both sides if the head config does not fit the model."""
    layers, hq, hkv = model_head_shape(model)
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    src = config.model_id or "head config"
    for what, mine, theirs in (
        ("layers", config.num_layers, layers),
        ("q_heads per layer", config.num_q_heads, hq),
        ("kv_heads per layer", config.num_kv_heads, hkv),
    ):
        if mine != theirs:
            raise ValueError(f"head config ({src}) has {mine} {what}, model ({name}) has {theirs}")


def _ensure_core_hybrid(model) -> None:
    """Route the text decoder to core_hybrid (public set_attn_implementation), leaving vision towers alone."""
    tc = text_config_of(model)
    if getattr(tc, "_attn_implementation", None) == ATTN_IMPLEMENTATION:
        return
    if tc is model.config:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    else:
        model.set_attn_implementation({"text_config": ATTN_IMPLEMENTATION})
    if getattr(tc, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
        raise RuntimeError(
            f"could not switch {type(model).__name__}'s text decoder to attn_implementation='core_hybrid'; "
            "load it with from_pretrained(..., attn_implementation='core_hybrid')"
        )


def attach(
    model,
    config: HeadConfig | str | os.PathLike | None = None,
    dense: float | int = 0.05,
    *,
    sink_size: int | None = None,
    window_size: int | None = None,
    decode: str = "dense",
    granularity: str = "q",
    backend: str = "auto",
) -> torch.Tensor:
    """Keep the top-ranked heads of ``config`` dense and stream all others during prefill.

    Args:
        model: a transformers model (multimodal or text-only). Its text decoder is switched to
            attn_implementation="core_hybrid" if it is not already.
        config: a HeadConfig, a folder written by ``HeadConfig.save_pretrained``, or a Hub repo
            id ("org/name", loaded with ``HeadConfig.from_pretrained``). None looks the model's
            name (config._name_or_path) up in core-attn's index of published rankings.
        dense: float fraction in (0, 1] of all heads (global ranking over layers, rounded up),
            or an int head count.
        sink_size, window_size: streaming parameters; default to the config's.
        decode: "dense" (default) runs decode steps (Tq == 1) with full attention; "hybrid"
            applies the streaming pattern to them too.
        granularity: "q" selects q_heads; "kv" selects whole kv_head groups.
        backend: hybrid_attention backend ("auto", "torch", "triton", "reference").
    Returns:
        bool [num_layers, num_q_heads], True for the dense q_heads.
    """
    if config is None:
        from ..heads.registry import head_config_for_model

        config = head_config_for_model(model)  # the published ranking for model's name, or a ValueError
    elif isinstance(config, (str, os.PathLike)):
        config = HeadConfig.from_pretrained(config)  # local folder, else Hub repo id
    if not isinstance(config, HeadConfig):
        raise TypeError(
            f"config must be a HeadConfig, a folder path or a Hub repo id, got {type(config).__name__}"
        )
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    from ..ops.dispatch import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_compatible(config, model)
    sink_size = config.sink_size if sink_size is None else sink_size
    window_size = config.window_size if window_size is None else window_size
    for name, v in (("sink_size", sink_size), ("window_size", window_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    mask = config.dense_mask(dense, granularity=granularity)
    _ensure_core_hybrid(model)
    setattr(
        text_config_of(model),
        SETTINGS_ATTR,
        {
            "dense_heads": [row.nonzero().flatten().tolist() for row in mask],
            "sink_size": sink_size,
            "window_size": window_size,
            "decode": decode,
            "backend": backend,
            "dense": dense,
            "granularity": granularity,
            "model_id": config.model_id,
            "metric": config.metric,
        },
    )
    return mask


def detach(model) -> None:
    """Remove the head selection: core_hybrid layers then behave exactly like sdpa."""
    tc = text_config_of(model)
    if hasattr(tc, SETTINGS_ATTR):
        delattr(tc, SETTINGS_ATTR)


def attached_settings(model) -> dict | None:
    """The selection attach() stored on the model, or None."""
    return getattr(text_config_of(model), SETTINGS_ATTR, None)
