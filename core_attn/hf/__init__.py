"""Everything that touches transformers: the attention-interface function and attach()."""

from .attach import attach, attached_settings, detach, model_head_shape
from .attention import ATTN_IMPLEMENTATION, core_hybrid_attention_forward, register

__all__ = [
    "ATTN_IMPLEMENTATION",
    "attach",
    "attached_settings",
    "core_hybrid_attention_forward",
    "detach",
    "model_head_shape",
    "register",
]
