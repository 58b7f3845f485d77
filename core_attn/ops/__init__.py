"""Attention kernels and their references. Imports only torch, triton and the standard library."""

from .dispatch import hybrid_attention
from .reference import hybrid_attention_reference, hybrid_allowed_mask

__all__ = ["hybrid_attention", "hybrid_attention_reference", "hybrid_allowed_mask"]
