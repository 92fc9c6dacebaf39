"""The one held-out scoring loop: blocks in batches on a device, each model's logits scored token-weighted.

Perplexity is exp(Σ NLL / Σ scored tokens) over every block of a set (padding excluded), never a mean of
per-batch means, so a short last batch counts for what it holds. `scoring_batches` is the loop; `perplexities`
scores plain models with it; `score` runs many scorers over shared passes with per-source subsets, the share of
tokens routed to their own model, agreement with the stacks and compute time.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from superpose.compare import References, Scorer
from superpose.core.metrics import DistributionAgreement, LMScore, token_nll_and_hits
from superpose.data.code_switch import NO_SOURCE, SourcedBlocks, load_spans, tokenize_spans
from superpose.data.text import Batch, collate, load_texts, tokenize_blocks

SWITCH_WINDOW = 8  # tokens after a switch of language whose perplexity is reported on its own


def scoring_batches(blocks, batch_size: int, pad_id: int, device: str | torch.device,
                    rows: Sequence[int] | None = None) -> Iterator[tuple[list[int], Batch]]:
    """(the blocks' indices, their padded batch on `device`) for every `batch_size` blocks of `blocks` (or of
    `rows` of them, e.g. one process's share). `blocks` is a list of token tensors, or labelled blocks that
    collate themselves with their domains (`collate(rows, pad_id)`)."""
    rows = range(len(blocks)) if rows is None else rows
    for start in range(0, len(rows), batch_size):
        picked = [int(i) for i in rows[start : start + batch_size]]
        if hasattr(blocks, "collate"):
            batch = blocks.collate(picked, pad_id)
        else:
            batch = collate([blocks[i] for i in picked], [0] * len(picked), pad_id)
        yield picked, batch.to(device)


def perplexities(models: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                 blocks: Sequence[torch.Tensor], pad_id: int, batch_size: int = 8,
                 device: str | torch.device = "cpu") -> dict[str, LMScore]:
    """Each model's token-weighted score over `blocks`; a model is a function (ids, mask) -> (B, T, V) logits."""
    scores = {name: LMScore() for name in models}
    with torch.no_grad():
        for _, batch in scoring_batches(blocks, batch_size, pad_id, device):
            for name, model in models.items():
                scores[name].update(model(batch.input_ids, batch.attention_mask), batch.labels)
    return scores


def causal_lm(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A `transformers` causal LM as a scoring function."""
    return lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits


@dataclass
class EvalSet:
    """The blocks of one --data file. `label` names the model whose domain it is (None: an unlabelled set);
    `sourced` holds each token's source for code-switched files (JSONL with spans)."""

    blocks: list[torch.Tensor]
    label: str | None
    sourced: SourcedBlocks | None = None


def load_sets(data: dict[str, str], names: list[str], tokenizer, block_size: int,
              max_blocks: int | None) -> dict[str, EvalSet]:
    """NAME=FILE sets: labelled when NAME is a model's name, unlabelled otherwise; JSONL with spans is code-switched."""
    sets = {}
    for name, path in data.items():
        records = load_spans(path) if Path(path).is_file() else None
        if records is not None:
            sourced = tokenize_spans(records, tokenizer, block_size, max_blocks)
            sets[name] = EvalSet(sourced.blocks, name if name in names else None, sourced)
        else:
            blocks = tokenize_blocks(load_texts(path), tokenizer, block_size, max_blocks)
            sets[name] = EvalSet(blocks, name if name in names else None)
    return sets


@dataclass
class Tally:
    """What `score` accumulates for one model on one set."""

    score: LMScore = field(default_factory=LMScore)
    subsets: dict[str, LMScore] = field(default_factory=dict)  # e.g. "source:fr", "after_switch"
    own_weight: list[int] = field(default_factory=lambda: [0, 0])  # [tokens whose heaviest weight is right, tokens]
    agreement: dict[str, DistributionAgreement] = field(default_factory=dict)
    seconds: float = 0.0

    def metrics(self) -> dict:
        metrics = self.score.as_dict()
        for key, subset in self.subsets.items():
            metrics[f"ppl_{key}"] = subset.ppl if subset.tokens else float("nan")
            metrics[f"tokens_{key}"] = subset.tokens
        if self.own_weight[1]:
            metrics["own_weight_share"] = self.own_weight[0] / self.own_weight[1]
        for ref_name, agreement in self.agreement.items():
            metrics[f"js_{ref_name}"] = agreement.js
            metrics[f"cos_{ref_name}"] = agreement.cosine
        metrics["seconds"] = self.seconds
        return metrics


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _pad(rows: list[torch.Tensor], length: int, fill) -> torch.Tensor:
    out = torch.full((len(rows), length), fill, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row
    return out


def source_subsets(sourced: SourcedBlocks, rows: list[int], labels: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Labels restricted to each source's tokens and to the first tokens after each switch; (B, T) sources."""
    length = labels.shape[1]
    sources = _pad([sourced.sources[i] for i in rows], length, NO_SOURCE).to(labels.device)
    since = _pad([sourced.segment_start[i] for i in rows], length, 0).to(labels.device)
    switched = _pad([sourced.switched[i] for i in rows], length, False).to(labels.device)
    subsets = {f"source:{name}": labels.masked_fill(sources != index, -100) for index, name in enumerate(sourced.names)}
    subsets["after_switch"] = labels.masked_fill(~(switched & (since < SWITCH_WINDOW)), -100)
    return subsets, sources


def count_own_weight(tally: Tally, weights: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor,
                     source_to_model: torch.Tensor) -> None:
    """Tokens whose heaviest per-token weight is on the model named like the token's source."""
    heaviest = weights[:, :, :-1].argmax(0)  # (B, T-1): position t predicts token t+1
    target_source = sources[:, 1:]  # (B, T-1)
    own = source_to_model[target_source.clamp(min=0)]  # (B, T-1), -1 where the source is no model
    valid = (labels[:, 1:] != -100) & (target_source != NO_SOURCE) & (own >= 0)
    tally.own_weight[0] += int(((heaviest == own) & valid).sum())
    tally.own_weight[1] += int(valid.sum())


def score(
    scorers: dict[str, Scorer],
    sets: dict[str, EvalSet],
    stacks: dict[str, torch.nn.Module],
    pad_id: int,
    batch_size: int,
    agreement_for: set[str] = frozenset(),
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, dict[str, dict]]:
    """{model: {set: metrics}}; each set's metrics carry 'seconds' (the model's compute) for throughput.

    `stacks` are the base and every expert ("base" first); they run on a batch only when a scorer reads their
    logits or agreement is measured.
    """
    agreement_for = set(agreement_for) & set(scorers)
    need_refs = bool(agreement_for) or any(scorer.uses_references for scorer in scorers.values())
    device = next(iter(stacks.values())).device
    tallies = {name: {set_name: Tally() for set_name in sets} for name in scorers}
    total = sum(math.ceil(len(s.blocks) / batch_size) for s in sets.values())
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for set_name, eval_set in sets.items():
        sourced = eval_set.sourced
        source_to_model = None
        if sourced is not None:
            source_to_model = torch.tensor([list(stacks).index(n) if n in stacks else -1 for n in sourced.names],
                                           device=device)
        for rows, batch in scoring_batches(eval_set.blocks, batch_size, pad_id, device):
            ids, mask, labels = batch.input_ids, batch.attention_mask, batch.labels
            logits_of, seconds_of = {}, {}
            if need_refs:
                with torch.no_grad():
                    for name, stack in stacks.items():
                        logits_of[name], seconds_of[name] = _timed(lambda: stack(ids, attention_mask=mask).logits)
            refs = References(logits_of, seconds_of, labels, eval_set.label)
            subsets, sources = source_subsets(sourced, rows, labels) if sourced is not None else ({}, None)
            log_refs = None
            for name, scorer in scorers.items():
                scorer.last_weights = None
                logits, seconds = _timed(lambda: scorer.logits(ids, mask, refs))
                tally = tallies[name][set_name]
                tally.seconds += seconds + scorer.extra_seconds(refs)
                # (B, T-1) each, once for the whole batch and every subset of its tokens
                nll, hits = token_nll_and_hits(logits, labels, scorer.returns_log_probs)
                tally.score.add(nll, hits, labels)
                for key, subset in subsets.items():
                    tally.subsets.setdefault(key, LMScore()).add(nll, hits, subset)
                if sources is not None and scorer.last_weights is not None:
                    count_own_weight(tally, scorer.last_weights, sources, labels, source_to_model)
                if name in agreement_for:
                    if log_refs is None:
                        log_refs = {**dict(zip(refs.names, refs.log_probs())), "mixture": refs.mixture()}
                    for ref_name, ref in log_refs.items():
                        tally.agreement.setdefault(ref_name, DistributionAgreement()).update(logits, ref, labels)
            bar.update(1)
    bar.close()
    return {name: {set_name: tally.metrics() for set_name, tally in per_set.items()}
            for name, per_set in tallies.items()}
