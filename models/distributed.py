"""Data-parallel training (PyTorch DDP) of the teacher, recording logits exactly as single-process
training does, and of the student.

Every rank runs the unchanged `train_teacher` (or `train_student`) loop over the same shuffled
global batches (same seeds, same data). `RankShard` makes each rank compute the forward pass only
for its contiguous share of a global batch and gathers the other ranks' logits, so every rank
holds the global batch's logits:

    out = gathered logits (detached), with this rank's share replaced by  z + (W − 1)·(z − z.detach())

Its value is each row's logit from the training forward pass (recorded by `train_teacher` with the
global step: one logit per trained sample, identical on every rank), and the loss is the global
batch's mean as in one process. Its gradient reaches only this rank's rows, scaled by W; DDP's
all-reduce averages over the W ranks, which gives exactly the global batch's gradient. Results
equal the single-process run up to floating-point summation order (the test bounds the difference).

Dropout draws different masks per rank: with `dropout > 0` the result is equivalent in distribution,
not numerically. Every rank loads every day's rows (fine on one host; a cluster shards the loading).
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from models.student import StudentOutput


def shard_bounds(batch_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of `rank`'s contiguous share of a batch (sizes differ by at most one row)."""
    base, extra = divmod(batch_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class RankShard(nn.Module):
    """Wraps a (DDP) model taking (sparse, dense, history) → logit (B,) (teacher) or StudentOutput
    (student, both towers): this rank's share of the forward pass, every rank's logits in the output
    (see the module docstring)."""

    def __init__(self, model: nn.Module, world_size: int | None = None, rank: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.world_size = world_size if world_size is not None else dist.get_world_size()
        self.rank = rank if rank is not None else dist.get_rank()

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor,
                history: torch.Tensor) -> torch.Tensor | StudentOutput:
        rows = sparse.shape[0]
        start, end = shard_bounds(rows, self.world_size, self.rank)
        keep_graph = None
        if end > start:
            local = self.model(sparse[start:end], dense[start:end], history[start:end])
        else:  # a tail batch smaller than the world: one row with zero weight, so this rank's backward syncs
            probe = self.model(sparse[:1], dense[:1], history[:1])
            local = _map(probe, lambda t: t[:0])
            keep_graph = sum(t.sum() for t in _tensors(probe)) * 0.0
        out = _map(local, lambda t: self._gather(t, rows))
        if keep_graph is None:
            return out
        return _map(out, lambda t: t + keep_graph)

    def _gather(self, local: torch.Tensor, rows: int) -> torch.Tensor:
        """(b,) this rank's rows → (B,) every rank's rows; gradient only to this rank's, × world size."""
        start, end = shard_bounds(rows, self.world_size, self.rank)
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
        return torch.cat(parts)


def _map(output: torch.Tensor | StudentOutput,
         fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | StudentOutput:
    """Apply `fn` to a logit tensor, or to each tower's logit of a StudentOutput."""
    if isinstance(output, StudentOutput):
        aux = fn(output.aux_logit) if output.aux_logit is not None else None
        return StudentOutput(fn(output.main_logit), aux)
    return fn(output)


def _tensors(output: torch.Tensor | StudentOutput) -> list[torch.Tensor]:
    if isinstance(output, StudentOutput):
        return [t for t in (output.main_logit, output.aux_logit) if t is not None]
    return [output]


class MainTowerOnly(nn.Module):
    """A decoupled student whose auxiliary tower gets no loss (the baseline, or a day without distillation):
    the same forward without the auxiliary logit, so the tower is unreachable from the output and DDP (with
    `find_unused_parameters`) marks its parameters ready instead of waiting for gradients that never come.
    The loss is unchanged: without distillation it reads only the main logit."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, history: torch.Tensor) -> StudentOutput:
        output = self.student(sparse, dense, history)
        if not isinstance(output, StudentOutput):
            raise TypeError(f"MainTowerOnly wraps a student; {type(self.student).__name__} returned {type(output)}")
        return StudentOutput(main_logit=output.main_logit, aux_logit=None)


def ddp_model(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """`model` under DistributedDataParallel on CPU (gloo) or on this rank's GPU (nccl).

    `find_unused_parameters`: parameters unreachable from the output (a `MainTowerOnly` student's auxiliary
    tower) are marked ready by DDP itself instead of it waiting for their gradients forever.
    """
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
        return nn.parallel.DistributedDataParallel(model.to(device), device_ids=[device.index],
                                                   find_unused_parameters=find_unused_parameters)
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)
