"""Score the superposed model and every baseline per domain on held-out text, honestly.

Perplexity is token-weighted over all scored tokens (padding excluded). Sweeps (e.g. linear:0.1..0.9)
are resolved on separate selection data, never on the data being reported.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .baselines import BaselineContext, References, Scorer, build_scorer, label, parse_baselines
from .baselines.weight_merge import MergedModelScorer
from .data import DataError, collate, load_texts, tokenize_blocks
from .metrics import DistributionAgreement, LMScore, average_log_probs
from .modeling import SuperposedModel
from .tables import format_table


class SuperposedScorer(Scorer):
    def __init__(self, model: SuperposedModel):
        self.model = model

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, refs):
        return self.model(input_ids, attention_mask=attention_mask).logits


class ReferenceScorer(Scorer):
    """The base or the expert alone (their logits are computed once per batch for everyone)."""

    def __init__(self, which: str):
        self.which = which

    def logits(self, input_ids, attention_mask, refs):
        return refs.base_logits if self.which == "base" else refs.expert_logits

    def extra_seconds(self, refs):
        return refs.base_seconds if self.which == "base" else refs.expert_seconds


@dataclass
class _Tally:
    score: LMScore = field(default_factory=LMScore)
    agreement: dict[str, DistributionAgreement] = field(default_factory=dict)
    seconds: float = 0.0


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def load_domain_blocks(data: dict[str, str], names: list[str], tokenizer, block_size: int,
                       max_blocks: int | None) -> dict[str, list[torch.Tensor]]:
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise DataError(f"data named {unknown} matches no model: use {' or '.join(names)}")
    return {name: tokenize_blocks(load_texts(path), tokenizer, block_size, max_blocks) for name, path in data.items()}


def score(
    scorers: dict[str, Scorer],
    blocks: dict[str, list[torch.Tensor]],
    base: torch.nn.Module,
    expert: torch.nn.Module,
    pad_id: int,
    batch_size: int,
    agreement_for: set[str] = frozenset(),
    reference_names: tuple[str, str] = ("base", "expert"),
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, dict[str, dict]]:
    """{model: {domain: metrics}} plus '_seconds' / '_tokens' per model for throughput."""
    tallies = {name: {domain: _Tally() for domain in blocks} for name in scorers}
    total = sum(math.ceil(len(b) / batch_size) for b in blocks.values())
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for domain, domain_blocks in blocks.items():
        for start in range(0, len(domain_blocks), batch_size):
            chunk = domain_blocks[start : start + batch_size]
            batch = collate(chunk, [0] * len(chunk), pad_id)
            device = base.device
            ids, mask, labels = batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device)
            with torch.no_grad():
                base_logits, base_s = _timed(lambda: base(ids, attention_mask=mask).logits)
                expert_logits, expert_s = _timed(lambda: expert(ids, attention_mask=mask).logits)
            refs = References(base_logits, expert_logits, base_s, expert_s, domain)
            log_refs = None
            for name, scorer in scorers.items():
                logits, seconds = _timed(lambda: scorer.logits(ids, mask, refs))
                tally = tallies[name][domain]
                tally.seconds += seconds + scorer.extra_seconds(refs)
                tally.score.update(logits, labels)
                if name in agreement_for:
                    if log_refs is None:
                        lb, le = torch.log_softmax(base_logits.float(), -1), torch.log_softmax(expert_logits.float(), -1)
                        log_refs = {reference_names[0]: lb, reference_names[1]: le, "mixture": average_log_probs(lb, le)}
                    for ref_name, ref in log_refs.items():
                        tally.agreement.setdefault(ref_name, DistributionAgreement()).update(logits, ref, labels)
            bar.update(1)
    bar.close()
    results: dict[str, dict[str, dict]] = {}
    for name, per_domain in tallies.items():
        results[name] = {}
        for domain, tally in per_domain.items():
            metrics = tally.score.as_dict()
            for ref_name, agreement in tally.agreement.items():
                metrics[f"js_{ref_name}"] = agreement.js
                metrics[f"cos_{ref_name}"] = agreement.cosine
            metrics["seconds"] = tally.seconds
            results[name][domain] = metrics
    return results


def _mean_log_ppl(per_domain: dict[str, dict]) -> float:
    return sum(math.log(m["ppl"]) for m in per_domain.values()) / len(per_domain)


def evaluate(
    model: SuperposedModel,
    tokenizer,
    data: dict[str, str],
    baselines: list[str] | None = None,
    select_data: dict[str, str] | None = None,
    extra_models: dict[str, torch.nn.Module] | None = None,
    other_runs: dict[str, SuperposedModel] | None = None,
    train_files: dict[str, str] | None = None,
    block_size: int = 128,
    batch_size: int = 8,
    max_blocks: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Per domain and model: perplexity, accuracy, tokens, and agreement with the experts' distributions.

    `other_runs` are further superposed models over the same base and expert (e.g. the 2d variant),
    `extra_models` plain causal LMs (e.g. an exported hard merge), scored alongside.
    """
    if not data:
        raise DataError("no evaluation data: pass --data NAME=FILE")
    model.eval()
    expert_name = model.config.expert_name
    names = ["base", expert_name]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sweeps = parse_baselines(baselines)
    context = BaselineContext(model.base, model.expert, expert_name, tokenizer, train_files or {}, seed)
    scorers: dict[str, Scorer] = {
        "superposed": SuperposedScorer(model), "base": ReferenceScorer("base"),
        f"expert:{expert_name}": ReferenceScorer("expert"),
    }
    skipped = {}
    for method, points in sweeps.items():
        for point in points:
            try:
                scorers[label(method, point)] = build_scorer(method, point, context)
            except DataError as err:
                if baselines is not None:  # asked for by name: the user must hear why it cannot run
                    raise
                skipped[label(method, point)] = str(err)
                warnings.warn(f"baseline {label(method, point)} skipped: {err}", UserWarning, stacklevel=2)
    sweeps = {m: [p for p in points if label(m, p) in scorers] for m, points in sweeps.items()}
    sweeps = {m: points for m, points in sweeps.items() if points}
    for name, run in (other_runs or {}).items():
        scorers[name] = SuperposedScorer(run.eval())
    for name, extra in (extra_models or {}).items():
        scorers[name] = MergedModelScorer(extra.eval())
    reference_labels = {"base", f"expert:{expert_name}", "oracle"}
    agreement_for = {name for name in scorers if name not in reference_labels}
    blocks = load_domain_blocks(data, names, tokenizer, block_size, max_blocks)
    results = score(scorers, blocks, model.base, model.expert, pad_id, batch_size, agreement_for,
                    ("base", expert_name), progress)

    best, selection = {}, {}
    swept = {method: points for method, points in sweeps.items() if len(points) > 1}
    if swept and select_data:
        if any(Path(select_data[k]).resolve() == Path(v).resolve() for k, v in data.items() if k in select_data):
            raise DataError("selection data must differ from the data being reported")
        select_scorers = {label(m, p): scorers[label(m, p)] for m, points in swept.items() for p in points}
        select_blocks = load_domain_blocks(select_data, names, tokenizer, block_size, max_blocks)
        chosen = score(select_scorers, select_blocks, model.base, model.expert, pad_id, batch_size,
                       progress=progress, desc="select sweeps")
        for method, points in swept.items():
            candidates = {label(method, p): _mean_log_ppl(chosen[label(method, p)]) for p in points}
            best[method] = min(candidates, key=candidates.get)
            selection[method] = {k: math.exp(v) for k, v in candidates.items()}

    throughput = {}
    for name, per_domain in results.items():
        tokens = sum(m["tokens"] for m in per_domain.values())
        seconds = sum(m.pop("seconds") for m in per_domain.values())
        throughput[name] = tokens / seconds if seconds > 0 else float("inf")
    return {
        "domains": list(blocks),
        "models": results,
        "best": best,
        "selection_geomean_ppl": selection,
        "throughput_tokens_per_s": throughput,
        "skipped_baselines": skipped,
        "settings": {"data": data, "select_data": select_data or {}, "baselines": {m: p for m, p in sweeps.items()},
                     "block_size": block_size, "batch_size": batch_size, "max_blocks": max_blocks, "seed": seed,
                     "base": model.config.base_model, "experts": model.config.experts,
                     "superposed": model.config.settings},
    }


def eval_table(result: dict) -> str:
    domains = result["domains"]
    best = set(result.get("best", {}).values())
    headers = ["model", *[f"{d} ppl" for d in domains], *[f"{d} acc" for d in domains], "tok/s"]
    rows = []
    for name, per_domain in result["models"].items():
        rows.append([name + (" ★" if name in best else ""),
                     *[per_domain[d]["ppl"] for d in domains],
                     *[per_domain[d]["accuracy"] for d in domains],
                     round(result["throughput_tokens_per_s"][name])])
    note = "★ = best point of its sweep, chosen on the selection data" if best else None
    table = format_table(headers, rows, title="evaluation (token-weighted perplexity, next-token accuracy)")
    return table + (f"\n{note}" if note else "")


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
    return path
