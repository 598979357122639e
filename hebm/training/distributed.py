"""Data parallel training under ``torchrun``: the process group (gloo on CPU, NCCL on GPU), the
rank and world size, and the collectives the trainer uses."""
from __future__ import annotations

import os

import torch


class Distributed:
    """The process group of a run (or a single process when ``WORLD_SIZE`` is 1)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.device = device
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            if device.startswith("cuda"):
                self.device = f"cuda:{self.local_rank}"
                torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, tensors: list) -> None:
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off: off + n].view_as(t))
            off += n

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        for p in module.state_dict().values():
            dist.broadcast(p, 0)

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


__all__ = ["Distributed"]
