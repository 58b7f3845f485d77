"""Merging RAM statistics of a data-parallel run (``accelerate launch`` / torchrun, one shard per rank).

Every rank accumulates its own shard in a :class:`core_attn.RamAccumulator`; merging adds the
float64 sums, sums of squares and counts of all ranks (never a mean of means, so shards of
different sizes weigh by their sample counts).
"""

from __future__ import annotations

import torch.distributed as dist

from core_attn.analysis.probe import RamAccumulator


def merge_across_ranks(accumulator: RamAccumulator, group=None) -> RamAccumulator:
    """The union of every rank's accumulator, returned on every rank.

    Without an initialised process group (a single-process run) the accumulator itself is
    returned. The exchange goes through ``all_gather_object`` of each rank's state dict
    (CPU tensors), so it works with gloo and NCCL alike.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return accumulator
    states = [None] * dist.get_world_size(group)
    dist.all_gather_object(states, accumulator.state_dict(), group=group)
    return RamAccumulator.merged(RamAccumulator.from_state_dict(s) for s in states)
