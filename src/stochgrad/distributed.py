"""Running statistics that agree across ranks.

Every moving statistic in stochgrad (baselines, firing rates, the learned predictor's moments) is a
mean over the examples of one step. [`mean_over_ranks`][stochgrad.distributed.mean_over_ranks] turns the local mean into the mean over
all ranks' examples, so two processes with half the batch each hold the state one process with the
whole batch would hold. Without an initialised process group it does nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


_AVAILABLE = dist.is_available()


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one rank is running."""
    return _AVAILABLE and dist.is_initialized() and dist.get_world_size() > 1


def mean_over_ranks(local_mean: Tensor, local_count: int) -> Tensor:
    """Mean over all ranks' examples, given this rank's mean over ``local_count`` examples.

    Every rank must call it whatever its batch (an empty one too: it then adds nothing, whatever its local "mean"
    holds; skipping the call would leave the other ranks waiting in ``all_reduce``)."""
    if not (_AVAILABLE and dist.is_initialized()) or dist.get_world_size() == 1:
        return local_mean
    local_sum = local_mean.reshape(-1) * local_count if local_count else local_mean.new_zeros(local_mean.numel())
    packed = torch.cat([local_sum,
                        torch.tensor([float(local_count)], dtype=local_mean.dtype, device=local_mean.device)])
    dist.all_reduce(packed)
    return (packed[:-1] / packed[-1]).reshape(local_mean.shape)
