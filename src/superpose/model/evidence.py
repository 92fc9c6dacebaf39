"""Gate evidence: each stack's fixed-share log-posterior over the tokens already seen, at several rates.

Position t's evidence uses tokens x_1..x_t only: stack m scores x_t with the prediction it made at
position t-1, and the scores are folded into fixed-share weights that may follow a switch of
language inside a sequence. Two kinds (the `gate_evidence` setting):

* `fixed_share`: a slow, a middle and a fast rate (`RATE_FACTORS` × the setting) let a gate tell a long run of one
  language (the slow posterior is sure) from a recent switch (only the fast one has moved).
* `fixed_share_mix`: the filters at every rate of `RATE_GRID`, plus one more row: the rate mixture, a Bayesian
  mixture over those filters (each weighted by how well it predicted the tokens so far), which needs no rate.

During generation the cache carries, per evidence source, the weights so far, each filter's log-likelihood so
far (rate mixture) and the last position's logits (to score the next token when it arrives), so cached = uncached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from superpose.core.mixtures import RATE_GRID, filter_log_likelihoods, fixed_share_scan, log_prob_of, mix_rates, pick

RATE_FACTORS = (0.1, 1.0, 10.0)  # × evidence_rate; the middle one is the setting itself
MAIN_RATE = 1


def evidence_rates(rate: float, kind: str = "fixed_share") -> list[float]:
    """The rates a gate's evidence runs at."""
    return list(RATE_GRID) if kind == "fixed_share_mix" else [rate * factor for factor in RATE_FACTORS]


def evidence_rows(kind: str) -> tuple[int, int]:
    """(rows of log-weights the gate reads per stack, the row that enters its logits directly)."""
    if kind == "fixed_share_mix":
        return len(RATE_GRID) + 1, len(RATE_GRID)  # every filter, then the rate mixture
    return len(RATE_FACTORS), MAIN_RATE


@dataclass
class GateEvidence:
    """What a gate reads of the tokens seen so far, for one forward chunk.

    `rows`: (B, T, R, M) log-weights after x_≤t, one row per filter (plus, for the rate mixture, the mixture's
    own row). The rate mixture also keeps what lets a trained gate compete with the filters as one more of them
    (`gated_rate_mixture`): `scores` (B, T, M) each stack's log p(x_t) (0 where unobserved), `observed` (B, T),
    `seen` (B, T, R) each filter's log-likelihood of x_≤t, and `store`, the cache's side states, where each layer's
    gate predictor carries its own likelihood and last weights to the next chunk (None without a cache).
    """

    rows: torch.Tensor
    scores: torch.Tensor | None = None
    observed: torch.Tensor | None = None
    seen: torch.Tensor | None = None
    store: dict | None = None


GATE_PRIOR = 0.5  # the trained gate's prior weight against the R filters together


def gated_rate_mixture(evidence: GateEvidence, gate_log_w: torch.Tensor, layer: int,
                       gate_prior: float = GATE_PRIOR) -> tuple[torch.Tensor, torch.Tensor]:
    """The rate mixture with the trained gate as one more filter: (B, T, M) gate log-weights -> (B, T, M)
    log-weights of a Bayesian mixture over the R fixed-share filters and the gate, each weighted by how well it
    predicted the tokens of this sequence so far (prior: `gate_prior` on the gate, the filters sharing the rest).

    Wherever the gate predicts worse than the filters its posterior weight falls, so against the training-free
    rate mixture it costs at most -log(1 - gate_prior) nats per sequence (log 2 by default), however it was
    trained; a gate whose weights equal the rate mixture's (an untrained one) leaves the result exactly the rate
    mixture, whatever its prior. The prior is fixed, not learned: a learned one grows on the training mix and
    loosens that bound on other text (measured in BENCHMARKS.md).

    Also returns the gate's own mean negative log-likelihood of the observed tokens, for training: through the
    mixture alone a gate that fell behind would get almost no gradient (its posterior weight is small).
    """
    key = ("gate", layer)
    carried = evidence.store.get(key) if evidence.store is not None else None
    batch, _, models = gate_log_w.shape
    if carried is not None:
        last, seen_before = carried["last"].to(gate_log_w), carried["seen"].to(gate_log_w)
    else:
        last = gate_log_w.new_full((batch, models), -math.log(models))
        seen_before = gate_log_w.new_zeros(batch)
    before = torch.cat([last[:, None], gate_log_w[:, :-1]], dim=1)  # the weights that predicted x_t
    # the gate is one more filter: the same likelihood and mixing as the fixed-share filters', in their layout
    likelihood = filter_log_likelihoods(before.permute(2, 0, 1)[None], evidence.scores.permute(2, 0, 1),
                                        evidence.observed)[0]  # (B, T)
    gate_seen = seen_before[:, None] + torch.cumsum(likelihood, dim=1)  # (B, T): log-likelihood of x_≤t
    filters = evidence.seen.shape[-1]
    log_prior = torch.tensor([math.log((1 - gate_prior) / filters)] * filters + [math.log(gate_prior)],
                             device=gate_log_w.device)
    seen = torch.cat([evidence.seen.to(gate_log_w), gate_seen[..., None]], dim=-1) + log_prior  # (B, T, R + 1)
    candidates = torch.cat([evidence.rows[:, :, :filters].to(gate_log_w), gate_log_w[:, :, None]], dim=2)
    if evidence.store is not None:
        evidence.store[key] = {"last": gate_log_w[:, -1].detach(), "seen": gate_seen[:, -1].detach()}
    own_nll = -likelihood.sum() / evidence.observed.sum().clamp(min=1)
    return mix_rates(candidates.permute(2, 3, 0, 1), seen.permute(2, 0, 1)).permute(1, 2, 0), own_nll


@torch.no_grad()
def fixed_share_evidence(
    stack_logits: list[torch.Tensor],
    input_ids: torch.Tensor,
    token_mask: torch.Tensor | None,
    rates: list[float],
    carried: dict | None = None,
    normalised: bool = False,
    rate_mixture: bool = False,
    prior: torch.Tensor | None = None,
) -> tuple[GateEvidence, dict]:
    """M stacks' (B, T, V) logits over this chunk -> the evidence, whose rows are (B, T, R, M) log-weights after
    x_≤t at each of the R rates (with `rate_mixture`, (B, T, R + 1, M): the last row is the Bayesian mixture over
    the R filters), and the state to carry. `normalised`: the logits are already log-probabilities (the parallel
    graph's heads, shared with the mixture head), so no pass over the vocabulary is needed to score a token.
    `prior` (M,) log-probabilities: where every filter starts and shares to (default uniform).

    A token counts as evidence only when it and the position that predicted it are real tokens, so a
    left-padded prompt gathers the same evidence as the prompt alone.
    """
    device = stack_logits[0].device
    input_ids = input_ids.to(device)
    batch, length = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if token_mask is None else token_mask.to(device).bool()
    score = pick if normalised else log_prob_of  # normalised: one read of one entry per position
    scores = torch.stack([score(lg[:, :-1].to(device), input_ids[:, 1:]).float() for lg in stack_logits])
    observed = mask[:, 1:] & mask[:, :-1]  # (B, T-1)
    if carried is not None:  # the previous chunk's last position predicted this chunk's first token
        last = carried["last_logits"].to(device)  # (B, M, V) log-probs
        first = pick(last, input_ids[:, :1].expand(-1, last.shape[1])).T[:, :, None]  # (M, B, 1)
        first_seen = carried["last_mask"].to(device) & mask[:, 0]
    else:
        first = scores.new_zeros(len(stack_logits), batch, 1)
        first_seen = torch.zeros(batch, dtype=torch.bool, device=device)
    evidence = torch.cat([first, scores], dim=-1)  # (M, B, T)
    observed = torch.cat([first_seen[:, None], observed], dim=1)  # (B, T)
    evidence = evidence.masked_fill(~observed[None], 0.0)
    models, count = len(stack_logits), len(rates)
    # every rate as one batch: column r * B + b is row b at rate r
    columns = torch.tensor(rates, dtype=evidence.dtype, device=device).repeat_interleave(batch)
    state = None
    if carried is not None:  # (B, R, M) -> (M, R * B)
        state = carried["log_w"].to(device).permute(2, 1, 0).reshape(models, count * batch)
    final = torch.stack([lg[:, -1].float() for lg in stack_logits], dim=1)  # (B, M, V): predicts the next chunk
    if state is not None:
        start = state
    elif prior is not None:
        start = prior.to(evidence)[:, None].expand(models, count * batch)
    else:
        start = evidence.new_full((models, count * batch), -math.log(models))
    log_w, last_w = fixed_share_scan(evidence.repeat(1, count, 1), columns, observed.repeat(count, 1), start,
                                     prior)
    new_state = {
        # (B, R, M): batch first, so beam search can reorder it like any cache
        "log_w": last_w.reshape(models, count, batch).permute(2, 1, 0).contiguous(),
        "last_logits": final if normalised else torch.log_softmax(final, -1),  # (B, M, V) log-probs
        "last_mask": mask[:, -1],
    }
    rows = log_w.reshape(models, count, batch, length).permute(2, 3, 1, 0)  # (B, T, R, M)
    if not rate_mixture:
        return GateEvidence(rows), new_state
    # each filter's log-likelihood of x_t, from its weights before x_t (the previous position's, or the carried)
    before = torch.cat([start[:, :, None], log_w[:, :, :-1]], dim=-1).reshape(models, count, batch, length)
    likelihood = filter_log_likelihoods(before.permute(1, 0, 2, 3), evidence, observed)  # (R, B, T)
    seen = torch.cumsum(likelihood, dim=-1)
    if carried is not None:
        seen = seen + carried["seen"].to(device).T[:, :, None]  # (B, R) -> (R, B, 1)
    new_state["seen"] = (seen[:, :, -1].T if length else carried["seen"]).contiguous()  # (B, R)
    mixture = mix_rates(log_w.reshape(models, count, batch, length).transpose(0, 1), seen)  # (M, B, T)
    rows = torch.cat([rows, mixture.permute(1, 2, 0)[:, :, None].to(rows.dtype)], dim=2)
    return GateEvidence(rows, evidence.permute(1, 2, 0), observed, seen.permute(1, 2, 0)), new_state


def stack_evidence(model, source, input_ids: torch.Tensor, token_mask: torch.Tensor | None, cache,
                   outputs: list[torch.Tensor] | None = None,
                   log_probs: list[torch.Tensor] | None = None) -> torch.Tensor | None:
    """(B, T, R, M) the model's gate evidence: the stacks' fixed-share log-posteriors at the setting's rates,
    read through each stack's own head on `outputs` (the sequential graph's layer outputs) or from those heads'
    `log_probs` (the parallel graph computes them once). None when the blend reads no evidence. `source` names
    the evidence's slot in the cache (a layer, or "parallel")."""
    if not model.blend.uses_evidence:
        return None
    normalised = log_probs is not None
    if log_probs is None:
        with torch.no_grad():
            log_probs = [stack.logits(out) for stack, out in zip(model.stacks, outputs)]
    carried = cache.evidence.get(source) if cache is not None else None
    kind = model.settings.gate_evidence
    rates = evidence_rates(model.settings.evidence_rate, kind)
    evidence, state = fixed_share_evidence(log_probs, input_ids, token_mask, rates, carried, normalised,
                                           rate_mixture=kind == "fixed_share_mix")
    if cache is not None:
        cache.evidence[source] = state
        evidence.store = cache.evidence  # where each layer's gate predictor carries its own state
    return evidence
