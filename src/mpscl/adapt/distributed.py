"""Data-parallel training under ``torchrun``: ranks, reductions, one writer.

Launch with ``torchrun --nproc_per_node N -m mpscl train ...``. Every rank builds the same
model from the same seed, takes its own share of each global batch (see
:mod:`mpscl.adapt.sampling`), averages gradients with an all-reduce after backward, and
reduces the per-class feature sums and counts before the prototype EMA, so models and
prototypes stay identical on every rank. Only rank 0 writes checkpoints and logs.
Backend: NCCL on CUDA, gloo on CPU.

A run on N ranks with ``data.batch_size`` B computes what one process computes with batch
N*B, up to floating-point summation order:

- BatchNorm with batch statistics (``model.batchnorm: trainable`` or ``live``, PatchGAN
  discriminators) normalises each domain's forward with the statistics of its global
  batch (:class:`DistBatchNorm2d`, which unlike ``torch.nn.SyncBatchNorm`` also runs on
  CPU/gloo);
- the class weights and normaliser of the weighted cross-entropy and the denominator of the
  masked target MPCL average are those of the global batch (counts are all-reduced);
- augmentation is seeded per global sample position, not per rank;
- logged loss values are averaged over ranks (= the global batch's values).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable

import torch
import torch.distributed as dist
from torch import nn

DEBUG_DUMP_ENV = "MPSCL_DEBUG_DUMP_RANKS"


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training mode under an initialised process group, normalises
    with the mean and (biased) variance of the global batch over all ranks, and updates the
    running statistics with them (unbiased variance, as ``nn.BatchNorm2d``). Gradients flow
    through the reductions, so the backward pass is that of BatchNorm on the global batch.

    Two-pass statistics in float32 (sum and count, then sum of squared deviations): two
    small all-reduces per forward and two per backward. Eval mode and single-process runs
    are plain ``nn.BatchNorm2d``; the state dict is the same, so checkpoints load either way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        xf = x.float()
        local_n = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dim=(0, 2, 3)), local_n]))
        n = sums[c].detach()
        if float(n) <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        mean = sums[:c] / n
        d = xf - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply((d * d).sum(dim=(0, 2, 3))) / n
        y = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every ``nn.BatchNorm2d`` of ``module`` that normalises with batch statistics
    (trainable, and ``live``: the authors' mode, affine frozen) a :class:`DistBatchNorm2d`,
    in place (same parameters with the same ``requires_grad``, buffers and state-dict keys):
    each domain's forward is normalised with the statistics of its GLOBAL batch over the
    ranks, so N ranks of batch B compute what one process with batch N*B (one GPU, as the
    authors ran it, when N*B = 4) computes. Frozen BatchNorm (always in eval mode) is left
    alone. Returns ``module``."""
    from ..models.batchnorm import LiveBatchNorm2d
    for m in module.modules():
        if type(m) in (nn.BatchNorm2d, LiveBatchNorm2d):
            m.__class__ = DistBatchNorm2d
    return module


class DistContext:
    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: torch.device) -> "DistContext":
        """Join the process group ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                # NCCL for CUDA tensors; gloo for the few CPU ones (stop flags, log scalars)
                backend = "cpu:gloo,cuda:nccl"
            else:
                backend = "gloo"
            dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one per tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def sync_batchnorm(self, module: nn.Module) -> nn.Module:
        """:func:`sync_batchnorm` when running on several ranks; otherwise ``module`` as is."""
        return sync_batchnorm(module) if self.enabled else module

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """``t`` as held by rank ``src``, on every rank (a copy; ``t`` is not modified)."""
        if not self.enabled:
            return t
        t = t.clone().contiguous()
        dist.broadcast(t, src=src)
        return t

    def mean_over_ranks(self, values: Dict[str, float]) -> Dict[str, float]:
        """Average logged scalars over ranks (every rank must pass the same keys)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def debug_dump(self, name: str, state_fn) -> None:
        """Test hook: with ``MPSCL_DEBUG_DUMP_RANKS=DIR`` in the environment, every rank
        writes ``DIR/<name>-rank<r>.pt`` (``state_fn()``, e.g. the trainer's state) so a
        test can check that the ranks hold identical weights and prototypes."""
        folder = os.environ.get(DEBUG_DUMP_ENV)
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(state_fn(), Path(folder) / f"{name}-rank{self.rank}.pt")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """True on every rank when any rank says True (e.g. a stop signal)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
