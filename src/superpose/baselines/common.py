"""What every baseline scorer gets: the two experts, the batch's reference logits, training files."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel


@dataclass
class BaselineContext:
    base: PreTrainedModel
    expert: PreTrainedModel
    expert_name: str
    tokenizer: object
    train_files: dict[str, str] = field(default_factory=dict)  # domain name -> file (the router learns from these)
    seed: int = 0


@dataclass
class References:
    """The base's and expert's logits on the current batch (each (B, T, V)), and their cost in seconds."""

    base_logits: torch.Tensor
    expert_logits: torch.Tensor
    base_seconds: float
    expert_seconds: float
    domain: str  # the domain whose file this batch comes from (only the oracle may look at it)


class Scorer:
    """Next-token logits for a batch; `extra_seconds` is the reference compute it used on that batch."""

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, refs: References) -> torch.Tensor:
        raise NotImplementedError

    def extra_seconds(self, refs: References) -> float:
        return 0.0
