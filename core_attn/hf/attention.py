"""The "core_hybrid" attention implementation for transformers.

Registered with both AttentionInterface and AttentionMaskInterface under one name: the
mask interface entry reuses sdpa's mask function, so padded batches reach us as a bool
[B, 1, Tq, Tk] mask (True = attend), or None when the batch has no padding (read as causal).

Which q_heads are dense is read from ``module.config.core_attn`` (the text config of the
model), written by :func:`core_attn.attach`. Layers without it, non-causal modules (vision
towers) and decode steps go to sdpa unchanged.
"""

from __future__ import annotations

import logging

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..ops import hybrid_attention

logger = logging.getLogger("core_attn")

ATTN_IMPLEMENTATION = "core_hybrid"
SETTINGS_ATTR = "core_attn"  # attribute of the text config that holds the attached head selection

_warned: set[str] = set()
_dense_cache: dict[tuple, torch.Tensor] = {}


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def _sdpa(*args, **kwargs):
    return ALL_ATTENTION_FUNCTIONS["sdpa"](*args, **kwargs)


def _dense_heads(settings: dict, layer_idx: int, num_q_heads: int, device: torch.device) -> torch.Tensor:
    """bool [HQ] for one layer, cached per (selection, layer, device)."""
    heads = tuple(settings["dense_heads"][layer_idx])
    key = (heads, num_q_heads, str(device))
    mask = _dense_cache.get(key)
    if mask is None:
        mask = torch.zeros(num_q_heads, dtype=torch.bool)
        mask[list(heads)] = True
        mask = mask.to(device)
        if len(_dense_cache) > 4096:
            _dense_cache.clear()
        _dense_cache[key] = mask
    return mask


def _as_bool_mask(attention_mask: torch.Tensor, tk: int) -> torch.Tensor:
    """sdpa's bool mask as is; an additive float mask (0 = attend) converted to bool."""
    attention_mask = attention_mask[:, :, :, :tk]
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def core_hybrid_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention-interface function: query [B, HQ, Tq, D], key/value [B, HKV, Tk, D] (not repeated).

    Returns (output [B, Tq, HQ, D] contiguous, None), the layout transformers expects.
    """
    args = (module, query, key, value, attention_mask)
    kw = dict(dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    layer_idx = getattr(module, "layer_idx", None)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if layer_idx is None or not causal:  # vision towers, encoders: not ours
        return _sdpa(*args, **kw)
    settings = getattr(getattr(module, "config", None), SETTINGS_ATTR, None)
    if not settings:
        _warn_once(
            "no-config",
            "core_hybrid attention is active but no head config is attached: running plain sdpa. "
            "Call core_attn.attach(model, head_config, dense=...) to enable hybrid prefill.",
        )
        return _sdpa(*args, **kw)
    tq = query.shape[2]
    if tq == 1 and settings.get("decode", "dense") == "dense":
        return _sdpa(*args, **kw)
    if dropout and module.training:
        raise ValueError(f"core_hybrid attention has no dropout; got dropout={dropout} in training mode")
    if layer_idx >= len(settings["dense_heads"]):
        raise ValueError(
            f"attached head config covers {len(settings['dense_heads'])} layers, but layer {layer_idx} was called"
        )
    tk = key.shape[2]
    if attention_mask is None:
        if tk > tq:
            # Mask None with Tk > Tq is a static cache's first prefill: keys past Tq are empty
            # slots. sdpa (top-left causal) ignores them the same way.
            key, value = key[:, :, :tq], value[:, :, :tq]
    else:
        attention_mask = _as_bool_mask(attention_mask, tk)
    out = hybrid_attention(
        query,
        key,
        value,
        _dense_heads(settings, layer_idx, query.shape[1], query.device),
        sink_size=int(settings["sink_size"]),
        window_size=int(settings["window_size"]),
        scale=scaling,
        attention_mask=attention_mask,
        backend=settings.get("backend", "auto"),
    )
    return out.transpose(1, 2).contiguous(), None


def register(name: str = ATTN_IMPLEMENTATION) -> None:
    """Register ``name`` with transformers' attention and mask interfaces.

    Idempotent: registering again maps the same name to the same functions.
    """
    AttentionInterface.register(name, core_hybrid_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
