"""Data-parallel training processes: one, or several launched by `accelerate launch` or `torchrun`.

Every process holds every frozen stack and its own copy of the blend and the autoencoders. After a step's
local backward passes, only the trainable parts' gradients are summed across processes (all-reduce,
tensor by tensor), so every process takes the same optimiser step. The model is deliberately not wrapped
in `DistributedDataParallel` (or `Accelerator.prepare`):
DDP broadcasts every parameter and buffer of the wrapped module when it is built (the frozen stacks
too: gigabytes for 8B models) and syncs only through `forward`, while training also runs
`forward_parallel` and the stacks alone. accelerate sets up the process group and the device of
each process (gloo on CPU, NCCL on CUDA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist

from superpose.core.loading import resolve_device
from superpose.core.settings import SettingsError

# Environment variables through which launchers (torchrun, accelerate, MPI) announce the number of processes.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_OWN_GROUP = False  # True once this module created the process group (and so may destroy it)


def launched_processes() -> int:
    """How many processes the launcher started (1 when run directly)."""
    sizes = [int(os.environ[name]) for name in WORLD_SIZE_VARIABLES if os.environ.get(name, "").isdigit()]
    return max(sizes, default=1)


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes, and the few collectives training needs."""

    index: int
    count: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The main process writes checkpoints, the model, run.json and logs; the others only compute."""
        return self.index == 0

    def barrier(self) -> None:
        if self.count > 1:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all processes, in place."""
        if self.count > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite `tensor` with the main process's, in place."""
        if self.count > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def gather(self, value: object) -> list:
        """Every process's `value`, in process order (on every process)."""
        if self.count == 1:
            return [value]
        gathered: list = [None] * self.count
        dist.all_gather_object(gathered, value)
        return gathered

    def finish(self) -> None:
        """Tear down the process group this module created (one a caller created is left alone)."""
        global _OWN_GROUP
        if _OWN_GROUP and dist.is_initialized():
            dist.destroy_process_group()
            _OWN_GROUP = False


def setup_processes(device: str | None) -> Processes:
    """Join the launched processes (if any) and pick this process's device.

    With several processes on CUDA each takes the GPU of its local rank; `device` then names only the
    device type. A process group that already exists (a user's `Accelerator`, accelerate's test launchers)
    is used as it is.
    """
    global _OWN_GROUP
    requested = resolve_device(device)
    if dist.is_available() and dist.is_initialized():
        index, count = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", index))
    elif launched_processes() > 1:
        from accelerate import PartialState

        state = PartialState(cpu=requested.type == "cpu")
        if state.num_processes != launched_processes():
            raise SettingsError(f"{launched_processes()} processes were launched but accelerate set up "
                                f"{state.num_processes} ({state.distributed_type}) for --device {requested}")
        index, count, local = state.process_index, state.num_processes, state.local_process_index
        _OWN_GROUP = True
    else:
        return Processes(0, 1, requested)
    if count > 1 and requested.type == "cuda":
        if device is not None and requested.index is not None:
            raise SettingsError(f"--device {device}: with {count} processes each process uses the GPU of its "
                                f"local rank; pass --device cuda")
        requested = torch.device("cuda", local)
        torch.cuda.set_device(requested)
    return Processes(index, count, requested)
