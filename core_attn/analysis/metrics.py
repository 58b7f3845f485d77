"""Head metrics over RAM maps and attention distributions.

- Key Token Ratio (per head): share of the target tokens T that fall inside the head's top 5%
  attended keys, where "attended" is the query rows' mean attention over keys
  (``RamResult.key_attention``, [L, HQ, Tk], from ``measure_ram(..., key_attention=True)``).
  The top set has ceil(top_fraction * Tk) keys; a head is a hit if its ratio >= 0.5.
- Key Token Coverage (per group of heads): |union of the target tokens inside the group's
  heads' top sets| / |T|, and its cumulative curve over the top-k heads of a ranking.
- Cross-task comparisons of score maps [L, HQ]: Spearman correlation of the flattened maps,
  top-k overlap, and stability counts (per task, heads above that task's 95th percentile;
  count over tasks).

Scores are fp32 [L, HQ]; heads are (layer, q_head) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .ablation import head_mask, ranked_heads

TOP_FRACTION = 0.05
HIT_THRESHOLD = 0.5


def _index(target_index, num_keys: int) -> torch.Tensor:
    t = torch.as_tensor(target_index).long().flatten()
    if t.numel() == 0:
        raise ValueError("target_index is empty: key-token metrics need at least one target token")
    if int(t.min()) < 0 or int(t.max()) >= num_keys:
        raise ValueError(f"target_index must lie in [0, {num_keys}), found [{int(t.min())}, {int(t.max())}]")
    if t.unique().numel() != t.numel():
        raise ValueError("target_index has duplicate positions")
    return t


def attended_targets(key_attention: torch.Tensor, target_index, *, top_fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Which target tokens sit in each head's top attended keys.

    Args:
        key_attention: [..., Tk] attention over keys per head (e.g. [L, HQ, Tk]).
        target_index: long [|T|] key positions of the target tokens.
        top_fraction: the top set holds ceil(top_fraction * Tk) keys (at least 1).
    Returns:
        bool [..., |T|]: True where the target token is in the head's top set.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    tk = key_attention.shape[-1]
    t = _index(target_index, tk).to(key_attention.device)
    k = max(1, math.ceil(top_fraction * tk - 1e-9))
    top = key_attention.float().topk(k, dim=-1).indices
    member = torch.zeros(key_attention.shape, dtype=torch.bool, device=key_attention.device)
    member.scatter_(-1, top, True)
    return member[..., t].cpu()


def key_token_ratio(key_attention: torch.Tensor, target_index, *, top_fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Key Token Ratio fp32 [...] (e.g. [L, HQ]): share of target tokens in each head's top attended keys."""
    return attended_targets(key_attention, target_index, top_fraction=top_fraction).float().mean(-1)


def key_token_hits(key_attention: torch.Tensor, target_index, *, top_fraction: float = TOP_FRACTION,
                   threshold: float = HIT_THRESHOLD) -> torch.Tensor:
    """bool [...]: heads whose Key Token Ratio is >= threshold (0.5 by default)."""
    return key_token_ratio(key_attention, target_index, top_fraction=top_fraction) >= threshold


def key_token_coverage(covered: torch.Tensor, heads) -> float:
    """Key Token Coverage of a group: |union of target tokens covered by the group's heads| / |T|.

    Args:
        covered: bool [L, HQ, |T|] from :func:`attended_targets`.
        heads: the group, as a bool [L, HQ] mask, (layer, q_head) pairs or "L{l}H{h}" labels.
    """
    if covered.dim() != 3 or covered.dtype != torch.bool:
        raise ValueError(f"covered must be bool [L, HQ, |T|], got {covered.dtype} {tuple(covered.shape)}")
    mask = head_mask(heads, *covered.shape[:2])
    return float(covered[mask].any(dim=0).float().mean()) if bool(mask.any()) else 0.0


def coverage_curve(covered: torch.Tensor, ranking, max_k: int | None = None) -> torch.Tensor:
    """Cumulative Key Token Coverage of the top-1, top-2, ... heads of a ranking.

    Args:
        covered: bool [L, HQ, |T|] from :func:`attended_targets`.
        ranking: a HeadConfig or a score map [L, HQ] (highest first), or a list of (layer, q_head) pairs.
        max_k: length of the curve (default: all heads of the ranking).
    Returns:
        fp32 [K]: entry i is the coverage of the top i + 1 heads.
    """
    if covered.dim() != 3 or covered.dtype != torch.bool:
        raise ValueError(f"covered must be bool [L, HQ, |T|], got {covered.dtype} {tuple(covered.shape)}")
    if isinstance(ranking, torch.Tensor) and ranking.dim() == 2 and ranking.is_floating_point():
        pairs = ranked_heads(ranking)
    elif hasattr(ranking, "scores"):
        pairs = ranked_heads(ranking.scores)
    else:
        pairs = [(int(a), int(b)) for a, b in ranking]
    pairs = pairs[: max_k if max_k is not None else len(pairs)]
    union = torch.zeros(covered.shape[-1], dtype=torch.bool)
    out = torch.empty(len(pairs))
    for i, (layer, q_head) in enumerate(pairs):
        union |= covered[layer, q_head]
        out[i] = union.float().mean()
    return out


# ----------------------------------------------------------------- comparing score maps
def _maps(maps) -> tuple[list[str], list[torch.Tensor]]:
    if isinstance(maps, torch.Tensor) or not isinstance(maps, (Mapping, Sequence)):
        raise TypeError(f"expected a dict name -> score map [L, HQ] (or a list of maps), got {type(maps).__name__}")
    if not isinstance(maps, Mapping):
        maps = {str(i): m for i, m in enumerate(maps)}
    if not maps:
        raise ValueError("no score maps given")
    names = list(maps)
    tensors = [torch.as_tensor(maps[n]).detach().to("cpu", torch.float64) for n in names]
    shape = tensors[0].shape
    for n, t in zip(names, tensors):
        if t.dim() != 2 or t.shape != shape:
            raise ValueError(f"score map {n!r} has shape {tuple(t.shape)}, expected {tuple(shape)} [L, HQ]")
    return names, tensors


def spearman_matrix(maps: Mapping[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """Spearman rank correlation (scipy.stats.spearmanr) between flattened score maps.

    Args:
        maps: name -> score map [L, HQ] (all the same shape), e.g. one per task; a list of maps
            is named "0", "1", ...
    Returns:
        (names, fp32 [N, N]) with names in the dict's order; NaN where a map is constant.
    """
    import numpy as np
    from scipy.stats import spearmanr

    names, tensors = _maps(maps)
    if len(names) == 1:
        return names, torch.ones(1, 1)
    data = np.stack([t.flatten().numpy() for t in tensors], axis=1)  # [L * HQ, N]
    rho = np.asarray(spearmanr(data).statistic, dtype=np.float64)
    if rho.ndim == 0:  # two maps: scipy returns the single coefficient
        rho = np.array([[1.0, float(rho)], [float(rho), 1.0]])
    return names, torch.from_numpy(rho).float()


def top_overlap(maps: Mapping[str, torch.Tensor], k: int) -> tuple[list[str], torch.Tensor]:
    """Share of top-k heads two maps have in common, for every pair of maps (dict or list, as above).

    Returns:
        (names, fp32 [N, N]): entry (i, j) = |top_k(i) & top_k(j)| / k (ties in (layer, q_head) order).
    """
    names, tensors = _maps(maps)
    total = tensors[0].numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= total:
        raise ValueError(f"k must be an int in [1, {total}], got {k!r}")
    tops = [set(ranked_heads(t.float())[:k]) for t in tensors]
    out = torch.empty(len(names), len(names))
    for i, a in enumerate(tops):
        for j, b in enumerate(tops):
            out[i, j] = len(a & b) / k
    return names, out


def stability_counts(maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], percentile: float = 95) -> torch.Tensor:
    """Per head, the number of maps (tasks; a dict or a list) in which it scores above that map's ``percentile``.

    The percentile is linear-interpolated (numpy's default); "above" is strict.

    Returns:
        int32 [L, HQ] with values in 0..len(maps).
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    _, tensors = _maps(maps)
    counts = torch.zeros(tensors[0].shape, dtype=torch.int32)
    for t in tensors:
        threshold = torch.quantile(t.flatten(), percentile / 100.0)
        counts += (t > threshold).int()
    return counts


__all__ = [
    "HIT_THRESHOLD",
    "TOP_FRACTION",
    "attended_targets",
    "coverage_curve",
    "key_token_coverage",
    "key_token_hits",
    "key_token_ratio",
    "spearman_matrix",
    "stability_counts",
    "top_overlap",
]
