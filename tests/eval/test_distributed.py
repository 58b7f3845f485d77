"""RAM statistics of data-parallel shards merge by sums and counts (simulated shards and 2 gloo processes)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core_attn import RamAccumulator
from core_attn_eval.distributed import merge_across_ranks


def samples(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, 4, generator=g), "a" if i % 3 else "b") for i in range(n)]


def accumulate(items):
    acc = RamAccumulator()
    for scores, task in items:
        acc.add(scores, task=task)
    return acc


def test_uneven_shards_merge_to_the_whole():
    items = samples()
    whole = accumulate(items)
    merged = RamAccumulator.merged([accumulate(items[:2]), accumulate(items[2:])])
    for task in (None, "a", "b"):
        torch.testing.assert_close(merged.mean(task), whole.mean(task))
        torch.testing.assert_close(merged.std(task), whole.std(task))
    # a mean of the two shard means would weigh the 2-sample shard like the 5-sample one
    mean_of_means = (accumulate(items[:2]).mean() + accumulate(items[2:]).mean()) / 2
    assert not torch.allclose(mean_of_means, whole.mean())


def test_single_process_returns_the_accumulator_itself():
    acc = accumulate(samples(3))
    assert merge_across_ranks(acc) is acc


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        items = samples()
        shard = items[:2] if rank == 0 else items[2:]
        merged = merge_across_ranks(accumulate(shard))
        torch.save({"count": merged.count(), "mean": merged.mean(), "b": merged.mean("b")}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_merge(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    whole = accumulate(samples())
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["count"] == 7
        torch.testing.assert_close(got["mean"], whole.mean())
        torch.testing.assert_close(got["b"], whole.mean("b"))
