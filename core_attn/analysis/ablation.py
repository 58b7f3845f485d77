"""Head ablation: zero (or scale) chosen q_heads' outputs, for any attention implementation.

A q_head's contribution to the residual stream is its slice of the input of ``o_proj``:
``o_proj`` reads [B, T, HQ * D] where columns h*D:(h+1)*D are q_head h's attention output. A
forward pre-hook on each text layer's ``o_proj`` multiplies the chosen slices by ``scale``
(0 removes the head; what the paper's attention masking of a head achieves), whatever
attention implementation ran before it (sdpa, eager, core_hybrid, flash). Hooks are public
PyTorch API and are always removed when the context exits.

Heads are (layer, q_head) pairs, given as a bool [L, HQ] mask, a list of pairs, or labels
"L{l}H{h}".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch

from ..heads.config import HeadConfig
from ..hf.attach import text_config_of
from .probe import text_attention_modules

STRATEGIES = ("top", "bottom", "random")
_LABEL = re.compile(r"^L(\d+)H(\d+)$")


def head_mask(heads, num_layers: int, num_q_heads: int) -> torch.Tensor:
    """bool [L, HQ] from a bool mask [L, HQ], (layer, q_head) pairs, or "L{l}H{h}" labels."""
    if isinstance(heads, torch.Tensor) and heads.dtype == torch.bool:
        if tuple(heads.shape) != (num_layers, num_q_heads):
            raise ValueError(
                f"head mask has shape {tuple(heads.shape)}, the model has [num_layers, num_q_heads] = "
                f"[{num_layers}, {num_q_heads}]"
            )
        return heads.detach().to("cpu").clone()
    if isinstance(heads, str):
        heads = [heads]
    if isinstance(heads, torch.Tensor):
        heads = heads.tolist()
    mask = torch.zeros(num_layers, num_q_heads, dtype=torch.bool)
    for item in heads:
        if isinstance(item, str):
            m = _LABEL.match(item.strip())
            if m is None:
                raise ValueError(f"head label {item!r} is not of the form 'L{{layer}}H{{q_head}}', e.g. 'L3H1'")
            layer, q_head = int(m.group(1)), int(m.group(2))
        else:
            try:
                layer, q_head = (int(v) for v in item)
            except (TypeError, ValueError):
                raise TypeError(f"expected a (layer, q_head) pair or a label like 'L3H1', got {item!r}") from None
        if not (0 <= layer < num_layers and 0 <= q_head < num_q_heads):
            raise ValueError(
                f"head (layer={layer}, q_head={q_head}) is outside the model's {num_layers} layers x "
                f"{num_q_heads} q_heads"
            )
        mask[layer, q_head] = True
    return mask


def _scale_hook(q_heads: torch.Tensor, num_q_heads: int, scale: float):
    def hook(module, args):
        x = args[0]  # [..., HQ * D]
        if x.shape[-1] % num_q_heads:
            raise ValueError(f"o_proj input has {x.shape[-1]} features, not a multiple of {num_q_heads} q_heads")
        y = x.reshape(*x.shape[:-1], num_q_heads, x.shape[-1] // num_q_heads).clone()
        y[..., q_heads.to(y.device), :] *= scale
        return (y.reshape(x.shape), *args[1:])

    return hook


@contextmanager
def ablate_heads(model, heads, *, scale: float = 0.0):
    """Zero (scale=0) or scale the outputs of the chosen (layer, q_head)s inside the block.

    Args:
        model: a transformers model; hooks go on its text decoder's ``o_proj`` modules.
        heads: bool [L, HQ], a list of (layer, q_head) pairs, or labels like "L3H1".
        scale: factor applied to the chosen heads' outputs (0.0 ablates them).
    Yields:
        the bool [L, HQ] mask of ablated heads.
    """
    modules = text_attention_modules(model)
    num_q_heads = int(text_config_of(model).num_attention_heads)
    mask = head_mask(heads, len(modules), num_q_heads)
    handles = []
    try:
        for layer, module in enumerate(modules):
            chosen = mask[layer].nonzero().flatten()
            if chosen.numel():
                handles.append(module.o_proj.register_forward_pre_hook(_scale_hook(chosen, num_q_heads, scale)))
        yield mask
    finally:
        for handle in handles:
            handle.remove()


def _scores_of(config) -> torch.Tensor:
    if isinstance(config, HeadConfig):
        return config.scores
    if isinstance(config, torch.Tensor) and config.dim() == 2:
        return config.detach().to("cpu", torch.float32)
    raise TypeError(f"expected a HeadConfig or a score map [num_layers, num_q_heads], got {type(config).__name__}")


def ranked_heads(config, *, descending: bool = True) -> list[tuple[int, int]]:
    """All (layer, q_head)s, highest score first (lowest first with descending=False); ties in (layer, q_head) order."""
    scores = _scores_of(config)
    order = torch.sort(scores.flatten(), descending=descending, stable=True).indices
    hq = scores.shape[1]
    return [(int(i) // hq, int(i) % hq) for i in order]


def select_heads(config, strategy: str, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """k (layer, q_head) pairs of a HeadConfig (or a score map [L, HQ]).

    strategy: "top" (highest scores first), "bottom" (lowest first), "random" (uniform over all
    heads, reproducible from ``seed``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    ranked = ranked_heads(config)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(ranked):
        raise ValueError(f"k must be an int in [0, {len(ranked)}] (the number of heads), got {k!r}")
    if strategy == "top":
        return ranked[:k]
    if strategy == "bottom":
        return ranked_heads(config, descending=False)[:k]
    g = torch.Generator().manual_seed(int(seed))
    return [ranked[int(i)] for i in torch.randperm(len(ranked), generator=g)[:k]]


def ablation_sweep(
    model,
    config,
    ks: Sequence[int],
    evaluate: Callable[[object], float],
    strategies: Iterable[str] = STRATEGIES,
    seed: int = 0,
    random_repeats: int = 1,
    *,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Evaluate the model with the top / bottom / random k heads ablated, for every k.

    Args:
        config: HeadConfig (or score map [L, HQ]) that ranks the heads.
        ks: head counts; k = 0 is the unablated baseline, evaluated once and shared by all strategies.
        evaluate: ``evaluate(model) -> float`` (e.g. accuracy on a benchmark).
        random_repeats: "random" is averaged over this many draws (seeds seed, seed + 1, ...).
    Returns:
        {strategy: [score at ks[0], score at ks[1], ...]}, aligned with ``ks``.
    """
    from tqdm.auto import tqdm

    strategies = list(strategies)
    for s in strategies:
        if s not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {s!r}")
    if random_repeats < 1:
        raise ValueError(f"random_repeats must be >= 1, got {random_repeats}")
    ks = [int(k) for k in ks]
    for k in ks:  # validate every k before running anything
        select_heads(config, "top", k)
    runs = [(s, k, r) for s in strategies for k in ks if k > 0 for r in range(random_repeats if s == "random" else 1)]
    bar = tqdm(total=len(runs) + (0 in ks), desc="ablation", disable=not progress)
    baseline = None
    if 0 in ks:
        baseline = float(evaluate(model))
        bar.update(1)
    scores: dict[tuple[str, int], list[float]] = {}
    try:
        for strategy, k, r in runs:
            heads = select_heads(config, strategy, k, seed=seed + r)
            bar.set_postfix_str(f"{strategy}-{k}")
            with ablate_heads(model, heads):
                scores.setdefault((strategy, k), []).append(float(evaluate(model)))
            bar.update(1)
    finally:
        bar.close()
    return {s: [baseline if k == 0 else sum(scores[s, k]) / len(scores[s, k]) for k in ks] for s in strategies}


__all__ = ["STRATEGIES", "ablate_heads", "ablation_sweep", "head_mask", "ranked_heads", "select_heads"]
