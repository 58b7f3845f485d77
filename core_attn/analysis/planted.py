"""Plant retrieval heads with a known answer into a (tiny, random-weight) model.

This is how the measurement is validated: after :func:`plant_retrieval_heads` the chosen
(layer, q_head)s attend from every text position to the tokens of ``target_token_id`` and copy
them into the residual stream, and no other head is built to; RAM must rank exactly these
heads on top, ablating them must move the output far more than ablating bottom heads, and their
Key Token Ratio must be high.

Construction (hidden size H, head_dim D, scaling 1/sqrt(D), rotate-half RoPE):

1. Three orthonormal hidden directions: the target direction e, a shared direction u and an
   output direction w. Every embedding row gets ``+b*u`` (a direction common to all tokens, like
   the massive activations of real LLMs: q_proj has no bias in Qwen3, so queries need a shared
   input direction to point the same way from every token), except the row of
   ``target_token_id``, which gets ``+b*e`` instead; b is 10x the mean embedding-row norm, so
   after the input RMSNorm (weight one at initialisation) a token's hidden state is about
   ``sqrt(H) * u`` or ``sqrt(H) * e``.
2. Score dimension j = D/2 - 1, the rotary pair with the lowest frequency theta_min =
   rope_theta^-(D-2)/D (its partner D - 1 is zeroed). RoPE turns q_j * k_j into
   q_j * k_j * cos(theta_min * (p_q - p_k)); at D = 16 and theta 1e4, theta_min = 3.2e-4 rad per
   token, so over 1000 tokens the score keeps >= 95% of its size: RoPE leaves this subspace
   (nearly) alone. (With partial rotary embeddings, an unrotated dimension is used instead.)
3. For a planted q_head h with kv_head g = h // G:
   q row (h, j) = a * u / sqrt(H): every token's query points along +j;
   k row (g, j) = c * (e - u) / sqrt(H): targets' keys along +j, every other token's along -j;
   so the score is about +a*c/sqrt(D) on targets and -a*c/sqrt(D) elsewhere, with
   a = c = sqrt(strength * sqrt(D)): a logit gap of 2 * strength. Models with q_norm / k_norm
   (Qwen3, Qwen3-VL, InternVL) normalise each head vector to norm sqrt(D) after the projection;
   since row j dominates it, the score saturates at +-sqrt(D) (gap 2 * sqrt(D), 8 at D = 16).
   Value row (g, 0) = sqrt(o) * e / sqrt(H) and o_proj column (h, 0) = sqrt(o) * w with
   o = b / (number of planted heads): the head writes about o * w into the residual stream of
   every position that attends to a target, all planted heads together at most b * w (the size
   of an embedding, so that the u share of later hidden states, and with it the later planted
   scores, stays large). w is orthogonal to e and u: later planted heads do not read it.
4. The other q_heads sharing kv_head g get their query rows j (and partner) zeroed, so the
   rewritten keys do not make them retrieval heads too.

Image tokens (features from the vision tower) carry neither e nor u: their planted score is
about 0, between the targets' and the text's. Target tokens are therefore text tokens with id
``target_token_id``; put them where the evidence should be. With q/k norms a small projection
on j is amplified, so image tokens that happen to lean towards e score close to the targets:
a planted head in the first layer of a multimodal model with q/k norms retrieves less cleanly
(RAM about 0.65 instead of 0.99 on the tiny Qwen3-VL), still far above the unplanted heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..heads.config import head_label
from ..hf.attach import text_config_of
from .ablation import head_mask
from .probe import text_attention_modules

VALUE_DIM = 0


@dataclass
class PlantedHeads:
    """What :func:`plant_retrieval_heads` did: the heads, the token and the directions used.

    heads: (layer, q_head) pairs, sorted. Directions are unit vectors [H] in hidden space.
    """

    heads: list[tuple[int, int]]
    target_token_id: int
    target_direction: torch.Tensor
    shared_direction: torch.Tensor
    output_direction: torch.Tensor
    score_dim: int
    strength: float

    @property
    def labels(self) -> list[str]:
        """Labels ("L{l}H{h}") of the planted heads."""
        return [head_label(layer, q_head) for layer, q_head in self.heads]

    def mask(self, num_layers: int, num_q_heads: int) -> torch.Tensor:
        """bool [L, HQ], True for the planted heads."""
        return head_mask(self.heads, num_layers, num_q_heads)

    def target_index(self, input_ids) -> torch.Tensor:
        """Positions (long [|T|]) of the target token in ``input_ids`` [T] or [1, T]."""
        ids = torch.as_tensor(input_ids)
        ids = ids[0] if ids.dim() == 2 else ids
        return (ids == self.target_token_id).nonzero().flatten()


def _directions(hidden: int, target_direction, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed))
    basis = torch.randn(hidden, 3, generator=g, dtype=torch.float64)
    if target_direction is not None:
        e = torch.as_tensor(target_direction, dtype=torch.float64).flatten()
        if e.numel() != hidden or float(e.norm()) == 0.0:
            raise ValueError(f"target_direction must be a non-zero vector of the hidden size {hidden}")
        basis[:, 0] = e
    q, _ = torch.linalg.qr(basis)
    q = q * torch.sign(torch.diagonal(q.T @ basis))  # keep e's orientation
    return q[:, 0].float(), q[:, 1].float(), q[:, 2].float()


def _score_dims(tc, head_dim: int) -> tuple[int, int | None]:
    params = getattr(tc, "rope_parameters", None) or {}
    partial = params.get("partial_rotary_factor", getattr(tc, "partial_rotary_factor", 1.0)) or 1.0
    rotary = int(head_dim * float(partial))
    if rotary < head_dim:
        return head_dim - 1, None  # not rotated at all
    return head_dim // 2 - 1, head_dim - 1


@torch.no_grad()
def plant_retrieval_heads(model, heads, *, target_token_id: int, target_direction=None, strength: float = 8.0,
                          seed: int = 0) -> PlantedHeads:
    """Rewrite ``model`` in place so that ``heads`` retrieve the tokens of ``target_token_id``.

    Args:
        model: a transformers model whose text decoder has q_proj / k_proj / v_proj / o_proj
            (every family core-attn supports; meant for tiny random-weight models).
        heads: (layer, q_head) pairs, labels like "L2H1", or a bool [L, HQ] mask.
        target_token_id: the token whose positions are the targets.
        target_direction: optional hidden-size vector for the targets' embedding direction e.
        strength: half the logit gap between target and other keys (models without q/k norms;
            with them the gap is 2 * sqrt(head_dim)).
        seed: draws the directions.
    Returns:
        :class:`PlantedHeads` (see the module docstring for the construction).
    """
    modules = text_attention_modules(model)
    tc = text_config_of(model)
    hq = int(tc.num_attention_heads)
    hkv = int(getattr(tc, "num_key_value_heads", None) or hq)
    group = hq // hkv
    mask = head_mask(heads, len(modules), hq)
    pairs = [(int(l), int(h)) for l, h in mask.nonzero().tolist()]
    if not pairs:
        raise ValueError("no heads to plant")
    emb = model.get_input_embeddings().weight
    vocab, hidden = emb.shape
    if not 0 <= int(target_token_id) < vocab:
        raise ValueError(f"target_token_id must be in [0, {vocab}), got {target_token_id}")
    e, u, w = _directions(hidden, target_direction, seed)
    e, u, w = (v.to(emb.device, emb.dtype) for v in (e, u, w))
    b = 10.0 * float(emb.float().norm(dim=-1).mean())
    emb += b * u
    emb[target_token_id] += b * (e - u)
    # (if the LM head is tied to the embeddings, +b*u only shifts every logit by the same amount)

    head_dim = modules[0].q_proj.out_features // hq
    j, partner = _score_dims(tc, head_dim)
    a = c = math.sqrt(float(strength) * math.sqrt(head_dim))
    o = b / len(pairs)
    root = math.sqrt(hidden)

    def set_rows(linear, rows, value):
        for r in rows:
            linear.weight[r] = value
            if linear.bias is not None:
                linear.bias[r] = 0.0

    for layer, module in enumerate(modules):
        mine = {h for l, h in pairs if l == layer}
        kv_here = {h // group for h in mine}
        for kv in kv_here:
            k_rows = [kv * head_dim + j] + ([kv * head_dim + partner] if partner is not None else [])
            set_rows(module.k_proj, k_rows[:1], c * (e - u) / root)
            set_rows(module.k_proj, k_rows[1:], 0.0)
            set_rows(module.v_proj, [kv * head_dim + VALUE_DIM], math.sqrt(o) * e / root)
            for h in range(kv * group, (kv + 1) * group):
                q_rows = [h * head_dim + j] + ([h * head_dim + partner] if partner is not None else [])
                if h in mine:
                    set_rows(module.q_proj, q_rows[:1], a * u / root)
                    set_rows(module.q_proj, q_rows[1:], 0.0)
                    module.o_proj.weight[:, h * head_dim + VALUE_DIM] = math.sqrt(o) * w
                else:  # shares the rewritten kv_head: make it blind to dimension j
                    set_rows(module.q_proj, q_rows, 0.0)
    return PlantedHeads(sorted(pairs), int(target_token_id), e.float().cpu(), u.float().cpu(), w.float().cpu(),
                        j, float(strength))


__all__ = ["PlantedHeads", "plant_retrieval_heads"]
