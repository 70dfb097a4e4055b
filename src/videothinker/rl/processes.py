"""The few things the processes of a multi-process run (torchrun, ``accelerate launch``) agree on in
the training loop, each a no-op on one process.

- **Samples**: a micro-batch's sampling generator is seeded by the data position of its first prompt
  (`sampling_seed`), so the same prompts get the same samples whether one process takes them in
  turn (gradient accumulation) or several at once: a run's numbers do not depend on its layout.
- **Gradients** (``distributed.strategy = replicate``): one all-reduce per step (`all_reduce_grads`);
  the loop calls the model's submodules directly, so there is no DDP wrapper to do it. Under FSDP
  the gradients are reduce-scattered in backward (models/sharding.py).
- **Branches**: a non-finite loss skips the step on every process or on none (`Collectives.everywhere`),
  since the processes meet in collectives inside backward.
- **Metrics**: the logged row is the global batch's: losses averaged, rollout columns gathered,
  memory peaks the fullest device's (`Collectives`).
"""

from __future__ import annotations

from typing import Any

import torch


def sampling_seed(seed: int, position: int) -> int:
    """The seed of a micro-batch's sampling: the run's seed and the data position of the micro-batch's
    first prompt (`PromptSampler.consumed` when it is taken, plus the process index)."""
    return (seed * 1_000_003 + position) % 2**63


def all_reduce_grads(params: list[torch.nn.Parameter], num_processes: int) -> None:
    """Average gradients over processes (the loop calls submodules directly, so no DDP wrapper)."""
    if num_processes == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class Collectives:
    """The loop's collectives over the processes of ``accelerator`` (an ``accelerate.Accelerator``)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.num_processes = accelerator.num_processes
        self.device = accelerator.device

    def everywhere(self, flag: bool) -> bool:
        """True where ``flag`` holds on every process (all of them then take the same branch)."""
        if self.num_processes == 1:
            return flag
        failed = torch.tensor([0.0 if flag else 1.0], device=self.device)
        return float(self.accelerator.reduce(failed, "sum")) == 0.0

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over processes (each holds an equal share of the global batch)."""
        return self._reduce(metrics, "mean")

    def max(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric's largest value on any process (memory peaks: the fullest device)."""
        return self._reduce(metrics, "max")

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in process order."""
        if self.num_processes == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def _reduce(self, metrics: dict[str, float], how: str) -> dict[str, float]:
        if self.num_processes == 1 or not metrics:
            return metrics
        import torch.distributed as dist

        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX if how == "max" else dist.ReduceOp.SUM)
        if how == "mean":
            values /= self.num_processes
        return dict(zip(keys, values.tolist()))
