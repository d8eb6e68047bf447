"""Data-parallel teacher training (PyTorch DDP) that records logits exactly as single-process training does.

Every rank runs the unchanged `train_teacher` loop over the same shuffled global batches (same seeds,
same data). `RankShard` makes each rank compute the forward pass only for its contiguous share of
a global batch and gathers the other ranks' logits, so every rank holds the global batch's logits:

    out = gathered logits (detached), with this rank's share replaced by  z + (W − 1)·(z − z.detach())

Its value is each row's logit from the training forward pass (recorded by `train_teacher` with the
global step: one logit per trained sample, identical on every rank), and the loss is the global
batch's mean as in one process. Its gradient reaches only this rank's rows, scaled by W; DDP's
all-reduce averages over the W ranks, which gives exactly the global batch's gradient. Results
equal the single-process run up to floating-point summation order (the test bounds the difference).

Dropout draws different masks per rank: with `dropout > 0` the result is equivalent in distribution,
not numerically. Every rank loads every day's rows (fine on one host; a cluster shards the loading).
"""

import torch
import torch.distributed as dist
from torch import nn


def shard_bounds(batch_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of `rank`'s contiguous share of a batch (sizes differ by at most one row)."""
    base, extra = divmod(batch_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class RankShard(nn.Module):
    """Wraps a (DDP) model taking (sparse, dense, history) → logit (B,): this rank's share of the
    forward pass, every rank's logits in the output (see the module docstring)."""

    def __init__(self, model: nn.Module, world_size: int | None = None, rank: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.world_size = world_size if world_size is not None else dist.get_world_size()
        self.rank = rank if rank is not None else dist.get_rank()

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        rows = sparse.shape[0]
        start, end = shard_bounds(rows, self.world_size, self.rank)
        keep_graph = None
        if end > start:
            local = self.model(sparse[start:end], dense[start:end], history[start:end])  # (b,)
        else:  # a tail batch smaller than the world: one row with zero weight, so this rank's backward syncs
            probe = self.model(sparse[:1], dense[:1], history[:1])
            local, keep_graph = probe[:0], probe.sum() * 0.0
        widest = shard_bounds(rows, self.world_size, 0)[1]  # rank 0 has the largest share
        padded = torch.zeros(widest, dtype=local.dtype, device=local.device)
        padded[: end - start] = local.detach()
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        parts = []
        for other, values in enumerate(gathered):
            other_start, other_end = shard_bounds(rows, self.world_size, other)
            if other == self.rank:
                parts.append(local + (self.world_size - 1) * (local - local.detach()))
            else:
                parts.append(values[: other_end - other_start])
        out = torch.cat(parts)  # (B,)
        return out + keep_graph if keep_graph is not None else out


def ddp_model(model: nn.Module) -> nn.Module:
    """`model` under DistributedDataParallel on CPU (gloo) or on this rank's GPU (nccl)."""
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
        return nn.parallel.DistributedDataParallel(model.to(device), device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)
