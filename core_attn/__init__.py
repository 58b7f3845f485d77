"""core-attn: CoRe (context-aware retrieval) heads for multimodal LLMs.

Importing the package registers the "core_hybrid" attention implementation with transformers.
"""

__version__ = "0.1.0"

from .heads import HeadConfig, head_label
from .heads.hub import push_head_config
from .hf import ATTN_IMPLEMENTATION, attach, attached_settings, detach, register
from .ops import hybrid_attention, hybrid_attention_reference
from .analysis import (
    RamAccumulator,
    RamResult,
    ablate_heads,
    ablation_sweep,
    key_token_coverage,
    key_token_ratio,
    measure_ram,
    plant_retrieval_heads,
    ram_over_dataset,
    ram_scores,
    select_heads,
    spearman_matrix,
    stability_counts,
)
from .analysis import ram_probe as probe

register()

__all__ = [
    "ATTN_IMPLEMENTATION",
    "HeadConfig",
    "RamAccumulator",
    "RamResult",
    "ablate_heads",
    "ablation_sweep",
    "key_token_coverage",
    "key_token_ratio",
    "measure_ram",
    "plant_retrieval_heads",
    "probe",
    "ram_over_dataset",
    "ram_scores",
    "select_heads",
    "spearman_matrix",
    "stability_counts",
    "__version__",
    "attach",
    "attached_settings",
    "detach",
    "head_label",
    "hybrid_attention",
    "hybrid_attention_reference",
    "push_head_config",
    "register",
]
