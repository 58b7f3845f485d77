"""Head analysis: measure retrieval heads (RAM), ablate them, compare and validate the maps.

Importing this package registers the "core_probe" attention implementation (RAM recording on
top of sdpa) with transformers. Scores are fp32 [L, HQ] over (layer, q_head); heads are
labelled "L{l}H{h}".
"""

from .ablation import STRATEGIES, ablate_heads, ablation_sweep, head_mask, ranked_heads, select_heads
from .metrics import (
    HIT_THRESHOLD,
    TOP_FRACTION,
    attended_targets,
    coverage_curve,
    key_token_coverage,
    key_token_hits,
    key_token_ratio,
    spearman_matrix,
    stability_counts,
    top_overlap,
)
from .planted import PlantedHeads, plant_retrieval_heads
from .probe import (
    PROBE_IMPLEMENTATION,
    ProbeRecorder,
    RamAccumulator,
    RamResult,
    measure_ram,
    ram_over_dataset,
    ram_scores,
    text_attention_modules,
    vision_scores,
)
from .probe import probe as ram_probe  # not re-exported as "probe": that name stays the submodule
from .probe import register as register_probe

# token mapping and datasets (figures: core_attn.analysis.plots, imported on use: matplotlib)
from .data import Record, Sample, SampleBuilder, load_records
from .tokens import (
    find_marker_spans,
    internvl_bbox_indices,
    llava_base_bbox_indices,
    qwen_bbox_indices,
    target_indices,
)

__all__ = [
    # measurement: probe.py, ablation.py, metrics.py, planted.py
    "HIT_THRESHOLD",
    "PROBE_IMPLEMENTATION",
    "STRATEGIES",
    "TOP_FRACTION",
    "PlantedHeads",
    "ProbeRecorder",
    "RamAccumulator",
    "RamResult",
    "ablate_heads",
    "ablation_sweep",
    "attended_targets",
    "coverage_curve",
    "head_mask",
    "key_token_coverage",
    "key_token_hits",
    "key_token_ratio",
    "measure_ram",
    "plant_retrieval_heads",
    "ram_over_dataset",
    "ram_probe",
    "ram_scores",
    "ranked_heads",
    "register_probe",
    "select_heads",
    "spearman_matrix",
    "stability_counts",
    "text_attention_modules",
    "top_overlap",
    "vision_scores",
    # token mapping, datasets: tokens.py, data.py
    "Record",
    "Sample",
    "SampleBuilder",
    "find_marker_spans",
    "internvl_bbox_indices",
    "llava_base_bbox_indices",
    "load_records",
    "qwen_bbox_indices",
    "target_indices",
]
