"""Language-model metrics from logits, accumulated over batches without averaging bias.

Every metric here is token-weighted over the positions that are actually
scored: logits at position i predict the label at i + 1 (the usual causal-LM
shift), and labels equal to ``IGNORE_INDEX`` (padding, prompt tokens) are
excluded. Perplexity is exp(total NLL / total tokens) over the whole stream,
never a mean of per-batch or per-sequence perplexities, which would over-weight
short sequences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
LN2 = math.log(2.0)


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Fail loudly on shape mix-ups instead of silently broadcasting."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"labels must be (B, T) matching logits {tuple(logits.shape)}, got {tuple(labels.shape)}"
        )


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align predictions with targets and select the scored positions.

    Returns ``(logits_scored (N, V), targets (N,), mask (B, T-1))`` where N is the
    number of non-ignored target positions.
    """
    _check_logits_labels(logits, labels)
    pred = logits[:, :-1, :]  # (B, T-1, V)
    target = labels[:, 1:].to(pred.device)  # (B, T-1)
    mask = target != IGNORE_INDEX  # (B, T-1)
    return pred[mask], target[mask], mask  # (N, V), (N,), (B, T-1)


@torch.no_grad()
def token_nll_and_hits(logits: torch.Tensor, labels: torch.Tensor,
                       normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, V) logits, (B, T) labels -> (B, T-1) NLL of each next token and whether the argmax is that token
    (0 and False where the label is ignored), without copying the scored rows out of the logits.

    `normalized`: the logits are already log-probabilities (a mixture's), so the NLL is read off without
    normalising them again, which is most of the cost.
    """
    _check_logits_labels(logits, labels)
    batch, length, vocab = logits.shape
    target = F.pad(labels[:, 1:].to(logits.device), (0, 1), value=IGNORE_INDEX)  # (B, T): the last predicts nothing
    work = torch.promote_types(logits.dtype, torch.float32)
    if normalized:
        picked = logits[:, :-1].gather(-1, target[:, :-1].clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        nll = (-picked.to(work)).masked_fill(target[:, :-1] == IGNORE_INDEX, 0.0)
    else:
        nll = F.cross_entropy(logits.reshape(-1, vocab).to(work), target.reshape(-1), reduction="none",
                              ignore_index=IGNORE_INDEX).view(batch, length)[:, :-1]  # (B, T-1)
    hits = logits[:, :-1].argmax(dim=-1) == target[:, :-1]  # (B, T-1)
    return nll, hits


def _safe_exp(x: float) -> float:
    """exp that returns inf instead of raising for a hopeless model."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _to_log_probs(x: torch.Tensor) -> torch.Tensor:
    """Normalise logits (or already-normalised log-probs, log_softmax is idempotent) in ≥ float32."""
    return F.log_softmax(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


class _TokenAverage:
    """Sums over scored positions, reported as per-token means."""

    total_tokens: int = 0

    def _require_tokens(self) -> None:
        if self.total_tokens == 0:
            raise ValueError("no tokens scored yet (all labels ignored or no update called)")

    @property
    def tokens(self) -> int:
        """Number of scored (shifted, non-ignored) target positions."""
        return self.total_tokens

    def _mean(self, total: float) -> float:
        self._require_tokens()
        return total / self.total_tokens


class LMScore(_TokenAverage):
    """Streaming perplexity / next-token accuracy over many batches.

    Keeps the summed NLL (float64), the number of scored tokens, and the number
    of argmax hits, so the final numbers are exactly those of one big batch.
    """

    def __init__(self) -> None:
        self.total_nll: float = 0.0
        self.total_tokens: int = 0
        self.total_correct: int = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``logits`` (B, T, V), ``labels`` (B, T) with -100 = ignore."""
        self.add(*token_nll_and_hits(logits, labels), labels)

    @torch.no_grad()
    def add(self, nll: torch.Tensor, hits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the positions that ``labels`` (B, T) scores from per-token results of `token_nll_and_hits`, so
        several subsets of one batch's tokens are scored from one pass over its logits."""
        mask = labels[:, 1:].to(nll.device) != IGNORE_INDEX  # (B, T-1)
        # Per-token NLL, summed in float64 so the total does not depend on batching.
        self.total_nll += float(nll[mask].double().sum().item())
        self.total_tokens += int(mask.sum().item())
        self.total_correct += int(hits[mask].sum().item())

    @property
    def nll(self) -> float:
        """Token-weighted mean negative log-likelihood in nats."""
        return self._mean(self.total_nll)

    @property
    def ppl(self) -> float:
        """exp(total NLL / total tokens): token-weighted, not a mean of per-sequence perplexities."""
        return _safe_exp(self.nll)

    @property
    def accuracy(self) -> float:
        """Fraction of scored positions whose argmax equals the target."""
        return self._mean(self.total_correct)

    def as_dict(self) -> dict[str, float]:
        return {"ppl": self.ppl, "accuracy": self.accuracy, "tokens": self.tokens, "nll": self.nll}


def average_log_probs(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """log(0.5·(p_a + p_b)) computed with logsumexp: the experts' averaged distribution.

    Works elementwise on any matching shape, e.g. (B, T, V) → (B, T, V); -inf
    entries (zero probability) are handled without NaNs.
    """
    stacked = torch.stack([logp_a, logp_b], dim=0)  # (2, ...)
    return torch.logsumexp(stacked, dim=0) - LN2  # (...)


def _kl_to_mixture(logp: torch.Tensor, logm: torch.Tensor) -> torch.Tensor:
    """Σ_v p_v (log p_v − log m_v) with 0·log 0 = 0. Shapes (..., V) → (...)."""
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logm), torch.zeros_like(p))  # (..., V)
    return terms.sum(dim=-1)


def js_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-position Jensen–Shannon divergence in nats from log-probs (..., V) → (...).

    Symmetric, 0 for identical distributions and at most ln 2 for disjoint
    supports; it is the bounded alternative to KL when the model may put zero
    mass where the reference does not. Rounding noise is clamped into [0, ln 2].
    """
    work = torch.promote_types(torch.promote_types(logp.dtype, logq.dtype), torch.float32)
    logp, logq = logp.to(work), logq.to(work)
    logm = average_log_probs(logp, logq)  # (..., V)
    jsd = 0.5 * _kl_to_mixture(logp, logm) + 0.5 * _kl_to_mixture(logq, logm)  # (...)
    return jsd.clamp(min=0.0, max=LN2)


def cosine_similarity_of_distributions(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-position cosine similarity of the probability vectors exp(logp), exp(logq): (..., V) → (...).

    Probabilities are non-negative, so the value lies in [0, 1] (1 = same direction).
    """
    work = torch.promote_types(torch.promote_types(logp.dtype, logq.dtype), torch.float32)
    p, q = logp.to(work).exp(), logq.to(work).exp()  # (..., V)
    return F.cosine_similarity(p, q, dim=-1)  # (...)


class DistributionAgreement(_TokenAverage):
    """Streaming agreement between a model's next-token distribution and a reference.

    Reports the mean per-token JSD (nats) and the mean per-token cosine
    similarity over the same shifted, non-ignored positions as :class:`LMScore`.
    The reference may be logits or log-probs (e.g. from :func:`average_log_probs`).
    """

    def __init__(self) -> None:
        self.total_js: float = 0.0
        self.total_cosine: float = 0.0
        self.total_tokens: int = 0

    @torch.no_grad()
    def update(
        self, logits_model: torch.Tensor, logits_reference: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Add one batch: both (B, T, V), ``labels`` (B, T) with -100 = ignore."""
        if tuple(logits_model.shape) != tuple(logits_reference.shape):
            raise ValueError(
                f"model and reference shapes differ: {tuple(logits_model.shape)} "
                f"vs {tuple(logits_reference.shape)}"
            )
        pred, target, mask = _shift(logits_model, labels)  # (N, V), (N,), (B, T-1)
        if target.numel() == 0:
            return
        ref = logits_reference[:, :-1, :].to(pred.device)[mask]  # (N, V)
        logp, logq = _to_log_probs(pred), _to_log_probs(ref)  # (N, V), (N, V)
        self.total_js += float(js_divergence(logp, logq).double().sum().item())
        self.total_cosine += float(cosine_similarity_of_distributions(logp, logq).double().sum().item())
        self.total_tokens += int(target.numel())

    @property
    def js(self) -> float:
        """Mean per-token Jensen–Shannon divergence in nats (in [0, ln 2])."""
        return self._mean(self.total_js)

    @property
    def cosine(self) -> float:
        """Mean per-token cosine similarity of the two probability vectors."""
        return self._mean(self.total_cosine)

    def as_dict(self) -> dict[str, float]:
        return {"js": self.js, "cosine": self.cosine, "tokens": self.tokens}
