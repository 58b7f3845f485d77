"""Metrics on hand-worked examples with known answers."""

import math

import pytest
import torch

from core_attn.analysis.metrics import (
    attended_targets,
    coverage_curve,
    key_token_coverage,
    key_token_hits,
    key_token_ratio,
    spearman_matrix,
    stability_counts,
    top_overlap,
)
from core_attn.heads import HeadConfig


# --------------------------------------------------------------------- Key Token Ratio
def key_attention():
    """[L=1, HQ=3, Tk=20]; top 5% of 20 keys = 1 key, top 20% = 4 keys."""
    a = torch.full((1, 3, 20), 0.01)
    a[0, 0, [2, 3, 4, 10]] = torch.tensor([0.5, 0.2, 0.1, 0.05])  # head 0: top-4 = {2, 3, 4, 10}
    a[0, 1, [0, 1, 2, 19]] = torch.tensor([0.4, 0.3, 0.1, 0.08])  # head 1: top-4 = {0, 1, 2, 19}; top-1 = {0}
    a[0, 2, [5, 6, 7, 8]] = torch.tensor([0.3, 0.3, 0.2, 0.1])  # head 2: top-4 = {5, 6, 7, 8}
    return a


TARGETS = torch.tensor([2, 3, 4, 5])


def test_key_token_ratio_hand_worked():
    a = key_attention()
    ratio = key_token_ratio(a, TARGETS, top_fraction=0.2)
    # head 0 holds 2, 3, 4 of {2, 3, 4, 5}; head 1 holds 2; head 2 holds 5
    torch.testing.assert_close(ratio, torch.tensor([[0.75, 0.25, 0.25]]))
    assert ratio.dtype == torch.float32
    assert key_token_hits(a, TARGETS, top_fraction=0.2).tolist() == [[True, False, False]]
    # default top 5% of 20 keys is ceil(1.0) = 1 key: head 0's best key (2) is a target
    torch.testing.assert_close(key_token_ratio(a, TARGETS), torch.tensor([[0.25, 0.0, 0.0]]))


def test_top_set_size_rounds_up():
    a = torch.arange(21, dtype=torch.float32).view(1, 1, 21)  # key 20 best, then 19, ...
    # 5% of 21 = 1.05 -> 2 keys {20, 19}
    assert attended_targets(a, [19, 20, 18]).tolist() == [[[True, True, False]]]


def test_attended_targets_membership():
    covered = attended_targets(key_attention(), TARGETS, top_fraction=0.2)
    assert covered.shape == (1, 3, 4) and covered.dtype == torch.bool
    assert covered[0].tolist() == [[True, True, True, False], [True, False, False, False], [False, False, False, True]]


@pytest.mark.parametrize(
    "target,match", [([], "empty"), ([20], r"\[0, 20\)"), ([2, 2], "duplicate")], ids=["empty", "past-end", "dup"]
)
def test_key_token_ratio_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        key_token_ratio(key_attention(), target)


# ------------------------------------------------------------------ Key Token Coverage
def covered_map():
    """bool [L=2, HQ=2, |T|=5]."""
    c = torch.zeros(2, 2, 5, dtype=torch.bool)
    c[0, 0, [0, 1]] = True
    c[0, 1, [1, 2]] = True
    c[1, 0, [4]] = True
    return c  # L1H1 covers nothing


@pytest.mark.parametrize(
    "heads,expected",
    [
        (["L0H0"], 2 / 5),
        (["L0H0", "L0H1"], 3 / 5),
        ([(0, 0), (0, 1), (1, 0), (1, 1)], 4 / 5),
        (["L1H1"], 0.0),
        ([], 0.0),
    ],
    ids=["one", "overlapping-pair", "all", "empty-head", "no-heads"],
)
def test_key_token_coverage_is_the_union_over_the_group(heads, expected):
    assert key_token_coverage(covered_map(), heads) == pytest.approx(expected)


def test_coverage_curve_follows_the_ranking():
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.7]])  # ranking L0H0, L1H1, L1H0, L0H1
    curve = coverage_curve(covered_map(), HeadConfig.from_scores(scores))
    torch.testing.assert_close(curve, torch.tensor([0.4, 0.4, 0.6, 0.8]))
    torch.testing.assert_close(coverage_curve(covered_map(), scores, max_k=2), torch.tensor([0.4, 0.4]))
    torch.testing.assert_close(coverage_curve(covered_map(), [(0, 1), (0, 0)]), torch.tensor([0.4, 0.6]))


# ----------------------------------------------------------------------------- Spearman
def test_spearman_hand_worked():
    base = torch.arange(20, dtype=torch.float32).view(2, 10)
    swapped = base.flatten().clone()
    swapped[[0, 19]] = swapped[[19, 0]]  # ranks 1 and 20 trade places, d = 19 twice
    names, rho = spearman_matrix({"a": base, "b": base * 3 + 1, "c": swapped.view(2, 10), "d": -base})
    assert names == ["a", "b", "c", "d"] and rho.shape == (4, 4) and rho.dtype == torch.float32
    expected = 1 - 6 * (2 * 19**2) / (20 * (20**2 - 1))
    assert rho[0, 1] == pytest.approx(1.0) and rho[0, 3] == pytest.approx(-1.0)
    assert rho[0, 2] == pytest.approx(expected, abs=1e-6) and rho[2, 0] == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(rho.diagonal(), torch.ones(4))


def test_spearman_two_and_one_maps():
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0]])
    _names, rho = spearman_matrix({"x": a, "y": b})
    torch.testing.assert_close(rho, torch.tensor([[1.0, 0.5], [0.5, 1.0]]))  # 1 - 6 * 2 / (3 * 8)
    one_name, one = spearman_matrix({"x": a})
    assert one_name == ["x"] and one.tolist() == [[1.0]]
    assert spearman_matrix([a, b])[0] == ["0", "1"]


def test_maps_must_share_a_shape():
    with pytest.raises(ValueError, match="shape"):
        spearman_matrix({"a": torch.zeros(2, 3), "b": torch.zeros(3, 2)})


# ------------------------------------------------------------------- overlap, stability
def test_top_overlap_hand_worked():
    a = torch.tensor([[4.0, 3.0], [2.0, 1.0]])  # top-2 {L0H0, L0H1}
    b = torch.tensor([[4.0, 1.0], [3.0, 2.0]])  # top-2 {L0H0, L1H0}
    names, m = top_overlap({"a": a, "b": b}, k=2)
    assert names == ["a", "b"] and m.tolist() == [[1.0, 0.5], [0.5, 1.0]]
    assert top_overlap({"a": a, "b": b}, k=4)[1].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        top_overlap({"a": a}, k=5)


def test_stability_counts_hand_worked():
    # 40 heads: the 95th percentile (linear) of 0..39 is 37.05, so the top set is the best 2 heads.
    base = torch.arange(40, dtype=torch.float32).view(4, 10)
    other = base.flatten().clone()
    other[[0, 39]] = other[[39, 0]]  # task 3's best heads: L0H0 and L3H8
    counts = stability_counts({"t1": base, "t2": base * 2, "t3": other.view(4, 10)}, percentile=95)
    assert counts.dtype == torch.int32 and counts.shape == (4, 10)
    assert counts[3, 9] == 2 and counts[3, 8] == 3 and counts[0, 0] == 1
    assert int(counts.sum()) == 6 and int((counts == 3).sum()) == 1
    # percentile 50 of 0..39 is 19.5: the upper half of heads
    half = stability_counts([base], percentile=50)
    assert int(half.sum()) == 20 and half.flatten()[20:].eq(1).all()
    assert math.isclose(float(torch.quantile(base.flatten(), 0.95)), 37.05, rel_tol=1e-6)
