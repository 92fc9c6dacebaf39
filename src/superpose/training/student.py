"""The one-stack student of `distill`: a trainable copy of a stack (all weights or a PEFT LoRA adapter), its
optimiser, the learning-rate schedule, and the plain checkpoint it becomes (the adapter merged in)."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from superpose.training.distill import DistillSettings


@dataclass
class Student:
    """The model being trained, its trainable tensors (the LoRA adapter's, or every weight) and its optimiser."""

    model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer


def make_student(stack: torch.nn.Module, settings: DistillSettings) -> torch.nn.Module:
    """A float32 trainable copy of `stack`; with `lora`, wrapped in a PEFT LoRA adapter (only it trains)."""
    student = copy.deepcopy(stack).float()
    student.requires_grad_(True)
    if settings.lora is None:
        return student.eval()
    from peft import LoraConfig, get_peft_model

    student.requires_grad_(False)
    torch.manual_seed(settings.seed)  # LoRA's A matrices are random
    config = LoraConfig(r=settings.lora, lora_alpha=settings.resolved_lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear", bias="none")
    import warnings

    with warnings.catch_warnings():  # GPT-2's Conv1D layers: PEFT sets fan_in_fan_out itself and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(student, config).eval()


def trainable_parameters(student: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of what trains (tied weights once: named_parameters drops duplicates)."""
    return {name: p for name, p in student.named_parameters() if p.requires_grad}


def merged_model(student: torch.nn.Module) -> torch.nn.Module:
    """The plain model: a LoRA student's adapter folded into its weights (a copy; the student is kept)."""
    if hasattr(student, "merge_and_unload"):
        return copy.deepcopy(student).merge_and_unload()
    return student


def save_student(student: torch.nn.Module, out_dir: str | Path, tokenizer, dtype: torch.dtype) -> torch.nn.Module:
    """Write the plain checkpoint (weights in `dtype`, config, generation config) and the tokenizer."""
    plain = copy.deepcopy(merged_model(student)).to(dtype)
    plain.config.name_or_path = str(out_dir)
    plain.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return plain


def lr_factor(step: int, steps: int) -> float:
    """Linear warmup over the first 10 % of steps, then cosine decay to 10 % of the peak."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def new_student(stack, settings: DistillSettings, device: torch.device) -> Student:
    model = make_student(stack, settings).to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.resolved_lr, betas=(0.9, 0.95),
                                  weight_decay=settings.weight_decay)
    return Student(model, params, optimizer)
