"""What every comparison method shares: its registry entry (`Method`), what its scorer gets (the M models,
the batch's reference logits) and the `Scorer` interface."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from superpose.core.mixtures import mix, token_log_probs

# one point of a sweep: a number, (density, λ), a grid of rates (a method whose one setting is a list), or None
Point = float | tuple[float, ...] | None


def number(text: str) -> float:
    """The usual point: one number. Raises ValueError naming the accepted form."""
    try:
        return float(text)
    except ValueError:
        raise ValueError("numbers") from None


@dataclass
class BaselineContext:
    models: dict[str, PreTrainedModel]  # "base" first, then each expert by name
    tokenizer: object
    train_files: dict[str, str] = field(default_factory=dict)  # model name -> file (the routers learn from these)
    seed: int = 0
    _shared: dict = field(default_factory=dict, repr=False)

    def shared(self, key: str, make: Callable[[], object]) -> object:
        """`make()` once per context: what several methods build alike (the routers' classifier)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    @property
    def base(self) -> PreTrainedModel:
        return self.models["base"]

    @property
    def experts(self) -> dict[str, PreTrainedModel]:
        return {name: model for name, model in self.models.items() if name != "base"}


@dataclass
class References:
    """Every model's logits on the current batch (each (B, T, V)) and their cost in seconds.

    `logits` is empty on a pass where no scorer reads it (then the models do not run). `domain` names the model
    whose labelled file the batch comes from (None for an unlabelled set): only an oracle may look at it, or at
    `labels` beyond what a causal method has already seen.
    """

    logits: dict[str, torch.Tensor]
    seconds: dict[str, float]
    labels: torch.Tensor  # (B, T), -100 on padding
    domain: str | None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.logits)

    def log_probs(self) -> torch.Tensor:
        """(M, B, T, V) float32 log-probabilities, in the order of `names`."""
        if "log_probs" not in self._cache:
            self._cache["log_probs"] = torch.stack([torch.log_softmax(x.float(), -1) for x in self.logits.values()])
        return self._cache["log_probs"]

    def evidence(self) -> torch.Tensor:
        """(M, B, T): log p_m of the token each position predicts (0 where nothing is scored)."""
        if "evidence" not in self._cache:
            self._cache["evidence"] = token_log_probs(self.log_probs(), self.labels)
        return self._cache["evidence"]

    def mixture(self) -> torch.Tensor:
        """(B, T, V) log-probs of the models' uniform average."""
        models = len(self.logits)
        return mix(self.log_probs(), torch.full((models, 1, 1), -math.log(models), device=self.labels.device))

    def all_seconds(self) -> float:
        return sum(self.seconds.values())


class Scorer:
    """Next-token logits for a batch.

    * `extra_seconds(refs)`: the reference compute it used on that batch (for throughput).
    * `uses_references`: whether `logits` reads the reference logits (else the models need not run).
    * `stacks(models)`: how many model stacks it runs per token when M = `models` are available.
    * `reads_answer`: a bound that looks at the tokens it scores (an oracle), never a usable model.
    * `last_weights`: (M, B, T) per-token weights over the models after `logits`, for methods that have them.
    * `returns_log_probs`: `logits` are normalised log-probabilities (a mixture, or a model's log-probs picked per
      token), so scoring need not normalise them again.
    """

    uses_references: bool = True
    reads_answer: bool = False
    returns_log_probs: bool = False
    last_weights: torch.Tensor | None = None

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, refs: References) -> torch.Tensor:
        raise NotImplementedError

    def extra_seconds(self, refs: References) -> float:
        return 0.0

    def stacks(self, models: int) -> float:
        return 1.0


def pick_per_token(refs: References, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) model indices -> the chosen model's log-probabilities at each position (B, T, V), and one-hot
    weights (M, B, T). Reads the batch's cached log-probabilities, so no scorer stacks the logits again."""
    log_probs = refs.log_probs()  # (M, B, T, V)
    index = choice[None, ..., None].expand(1, -1, -1, log_probs.shape[-1])
    logits = log_probs.gather(0, index).squeeze(0)
    weights = torch.nn.functional.one_hot(choice, len(refs.logits)).permute(2, 0, 1).float()  # (M, B, T)
    return logits, weights


@dataclass(frozen=True)
class Method:
    """One comparison method as the registry knows it (`method` or `method:p1,p2` on the command line).

    * `build(context, point, **options)`: its scorer at one point (`point` is None without a parameter).
    * `sweep`: the points swept by default; None when the method takes no parameter.
    * `parse`: one point's text -> the point; raises ValueError whose message names the accepted form.
    * `merge`: a weight merge's state-dict function `(base_sd, expert_sds, point, seed=0) -> state dict`. Its
      scorer holds a model as large as the base, so evaluation builds and scores those one at a time.
    * `one_setting`: the text after `:` is the method's one setting, commas included (`parse` reads all of it);
      without it the method uses its default (point None). Nothing is swept, so nothing needs selection data.
    """

    name: str
    build: Callable[..., Scorer]
    sweep: tuple[Point, ...] | None = None
    parse: Callable[[str], Point] = number
    merge: Callable | None = None
    one_setting: bool = False

    @property
    def takes_parameter(self) -> bool:
        return self.sweep is not None

    @property
    def holds_model(self) -> bool:
        return self.merge is not None
