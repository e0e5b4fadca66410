"""Who this training process is under ``torchrun``: rank, world size, device, process group.

The process group uses nccl on CUDA and gloo on CPU; one process without ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fusion_perception.engine import select_device


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank; one process by default."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(spec: str) -> tuple[DistInfo, torch.device, bool]:
    """The process's rank, its device and whether this call created the process group (then
    the caller destroys it); one process without ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), select_device(spec), False
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = select_device(spec)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank if spec in ("auto", "cuda") else device.index)
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device, created
