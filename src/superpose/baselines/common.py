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
    """The base's and expert's logits on the current batch (each (B, T, V)), and their cost in seconds.

    The logits are None on a pass where no scorer uses them (then the two experts do not run).
    """

    base_logits: torch.Tensor | None
    expert_logits: torch.Tensor | None
    base_seconds: float
    expert_seconds: float
    domain: str  # the domain whose file this batch comes from (only the oracle may look at it)


class Scorer:
    """Next-token logits for a batch; `extra_seconds` is the reference compute it used on that batch.

    `uses_references` says whether `logits` reads the base's and expert's logits of the batch.
    """

    uses_references: bool = True

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, refs: References) -> torch.Tensor:
        raise NotImplementedError

    def extra_seconds(self, refs: References) -> float:
        return 0.0
