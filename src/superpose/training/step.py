"""One optimiser step over a global batch, identical whatever the processes and gradient accumulation:
per-sequence dropout seeds, token-share weighting of each chunk, summed gradients, per-group clipping."""
from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import nn

from superpose.model.superposed import SuperposedModel
from superpose.training.blocks import LabelledBlocks, seed_of
from superpose.training.distributed import Processes
from superpose.training.losses import LOGGED, WEIGHTS, compute_losses
from superpose.training.settings import TrainSettings


def make_optimizer(model: SuperposedModel, settings: TrainSettings) -> torch.optim.AdamW:
    groups = [{"params": list(model.blend.spline.parameters()), "lr": settings.lr_blend, "name": "blend"}]
    if model.blend.gate is not None:
        groups.append({"params": list(model.blend.gate.parameters()), "lr": settings.lr_gate, "name": "gate"})
    ae_params = list(model.autoencoders.parameters())
    if ae_params:
        groups.append({"params": ae_params, "lr": settings.lr_ae, "name": "autoencoders"})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def resolve_mixed_precision(settings: TrainSettings, device: torch.device, stack_dtype: torch.dtype) -> str:
    """The autocast mode: as set, else bf16 on a CUDA device that supports it (unless the stacks are fp16)."""
    if settings.mixed_precision is not None:
        return settings.mixed_precision
    if device.type == "cuda" and stack_dtype != torch.float16 and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"  # CPU runs compute exactly as without this option


def autocast(mode: str, device: torch.device):
    """bf16 autocast of the forward: the stacks' matmuls and the AEs run in bf16, while the blend, the running
    blended state, the trainable parameters, their gradients and every loss stay float32."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_step(optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip each parameter group's gradient norm on its own (as the paper does), then step."""
    for group in optimizer.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], grad_clip)
    optimizer.step()


class SequenceSeededDropout:
    """While training, draw the autoencoders' dropout masks per sequence, from that sequence's own seed.

    The seed depends on the run's seed, the epoch and the sequence's position in the epoch's order, never
    on the batch that holds it. So P processes with batch B, or K accumulated micro-batches of B, drop
    exactly what one batch of P·K·B drops, and a resumed run draws the masks of an uninterrupted one.
    """

    def __init__(self, model: SuperposedModel, length: int):
        self.seeds: list[int] = []
        self.length = length  # masks are drawn for this many positions and cut to the batch's padded length
        dropouts = [m for m in model.autoencoders.modules() if isinstance(m, nn.Dropout)]
        self._handles = [m.register_forward_hook(functools.partial(self._drop, index))
                         for index, m in enumerate(dropouts)]

    def _drop(self, index: int, module: nn.Dropout, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or module.p == 0:
            return None
        x = inputs[0]  # (B, T, m)
        if len(self.seeds) != x.shape[0]:
            raise RuntimeError(f"dropout over {x.shape[0]} sequences was given {len(self.seeds)} seeds")
        # (B, T, m): drawn at a fixed length, so a sequence's mask does not depend on how far its batch is padded
        shape = (max(self.length, x.shape[1]), x.shape[2])
        keep = torch.stack([
            torch.rand(shape, generator=torch.Generator(x.device).manual_seed(seed_of(seed, index)),
                       device=x.device)[: x.shape[1]] >= module.p
            for seed in self.seeds
        ])
        return x * keep.to(x.dtype) / (1 - module.p)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def sum_gradients(optimizer: torch.optim.Optimizer, totals: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Add up the trainable parameters' gradients (and the step's loss totals) over all processes.

    Each process's gradient is already weighted by its share of the global batch, so the sum is the
    gradient of the global batch's loss. A parameter no process produced a gradient for keeps none (AdamW
    then leaves it alone, as in one process).
    """
    if processes.count == 1:
        return totals
    params = [p for group in optimizer.param_groups for p in group["params"]]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    shared = processes.sum_(torch.cat([totals, has_grad]).to(processes.device)).cpu()
    for param, produced in zip(params, shared[len(totals):].tolist()):
        if produced:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            processes.sum_(param.grad)  # one collective per tensor: no second copy of large AE gradients
    return shared[: len(totals)]


def process_chunks(rows: list[int], size: int, processes: Processes):
    """(chunk index, rows) of this process's micro-batches of a global batch: chunk c is micro-batch c // P of
    process c % P, so any split over processes and accumulation covers the global batch once."""
    for chunk in range(processes.index, math.ceil(len(rows) / size), processes.count):
        yield chunk, rows[chunk * size : (chunk + 1) * size]


def train_step(model: SuperposedModel, optimizer: torch.optim.Optimizer, data: LabelledBlocks, rows: list[int],
               first: int, epoch: int, settings: TrainSettings, processes: Processes, dropout: SequenceSeededDropout,
               pad_id: int, precision: str) -> tuple[dict[str, float], int]:
    """One optimiser step on the global batch `rows` (positions `first`... of the epoch's order).

    The global batch is cut into chunks of `batch_size`: chunk c is micro-batch c // P of process c % P.
    The loss terms are token means, so each chunk's term is weighted by its share of the global batch's
    tokens (labelled tokens for the reconstruction and gate labels, scored positions for the LM loss) and the
    regulariser is counted once: the summed gradient is exactly the gradient of one batch holding all of `rows`.
    (The load-balance term is quadratic in a per-chunk mean, so for it this holds only approximately.)
    Returns the global batch's losses and its token count.
    """
    lengths = [data.blocks[i].numel() for i in rows]
    labelled = [data.labelled_tokens(i) for i in rows]
    tokens, scored, labelled_total = sum(lengths), sum(lengths) - len(rows), sum(labelled)
    unlabelled_total = tokens - labelled_total
    size = settings.batch_size
    device = processes.device
    optimizer.zero_grad(set_to_none=True)
    totals = torch.zeros(len(LOGGED), dtype=torch.float64)
    for chunk, picked in process_chunks(rows, size, processes):
        batch = data.collate(picked, pad_id).to(device)
        dropout.seeds = [seed_of(settings.seed, epoch, first + chunk * size + j) for j in range(len(picked))]
        chunk_tokens = sum(lengths[chunk * size : (chunk + 1) * size])
        chunk_labelled = sum(labelled[chunk * size : (chunk + 1) * size])
        labelled_share = chunk_labelled / labelled_total if labelled_total else 0.0
        scored_share = (chunk_tokens - len(picked)) / scored
        share = {"recon": labelled_share, "gate_ce": labelled_share, "lm": scored_share, "gate_own": scored_share,
                 "balance": (chunk_tokens - chunk_labelled) / unlabelled_total if unlabelled_total else 0.0,
                 "blend_reg": 1.0 if chunk == 0 else 0.0}
        with autocast(precision, device):
            losses = compute_losses(model, batch, settings)
        objective = sum(getattr(settings, WEIGHTS[k]) * losses[k] * share[k] for k in LOGGED[1:])
        objective.backward()
        totals += torch.tensor([float(objective.detach())]
                               + [float(losses[k].detach()) * share[k] for k in LOGGED[1:]], dtype=torch.float64)
    totals = sum_gradients(optimizer, totals, processes)
    optimizer_step(optimizer, settings.grad_clip)
    return dict(zip(LOGGED, totals.tolist())), tokens


