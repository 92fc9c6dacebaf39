"""Score the superposed model and every baseline per domain on held-out text, honestly.

Perplexity is token-weighted over all scored tokens (padding excluded). Sweeps (e.g. linear:0.1..0.9)
are resolved on separate selection data, never on the data being reported.

Memory: the cheap scorers (superposed, base, expert, ensemble, router, oracle, models passed in) share one
pass and the base's and expert's logits of each batch; each weight merge is as large as the base, so the
merges are built, scored and replaced one at a time in one reusable model (peak: base, expert, one merge).
"""
from __future__ import annotations

import gc
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from .baselines import (
    BaselineContext, MergedModelScorer, References, Scorer, build_scorer, holds_model, label, parse_baselines,
)
from .data import DataError, collate, load_texts, tokenize_blocks
from .metrics import DistributionAgreement, LMScore, average_log_probs
from .modeling import SuperposedModel
from .tables import format_table


class SuperposedScorer(Scorer):
    uses_references = False

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
    """{model: {domain: metrics}}; each domain's metrics carry 'seconds' (the model's compute) for throughput.

    The base and expert run on a batch only when a scorer reads their logits or agreement is measured.
    """
    agreement_for = set(agreement_for) & set(scorers)
    need_refs = bool(agreement_for) or any(scorer.uses_references for scorer in scorers.values())
    tallies = {name: {domain: _Tally() for domain in blocks} for name in scorers}
    total = sum(math.ceil(len(b) / batch_size) for b in blocks.values())
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for domain, domain_blocks in blocks.items():
        for start in range(0, len(domain_blocks), batch_size):
            chunk = domain_blocks[start : start + batch_size]
            batch = collate(chunk, [0] * len(chunk), pad_id)
            device = base.device
            ids, mask, labels = batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device)
            base_logits = expert_logits = None
            base_s = expert_s = 0.0
            if need_refs:
                with torch.no_grad():
                    base_logits, base_s = _timed(lambda: base(ids, attention_mask=mask).logits)  # (B, T, V)
                    expert_logits, expert_s = _timed(lambda: expert(ids, attention_mask=mask).logits)  # (B, T, V)
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


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    """The process's peak resident memory so far (and the CUDA allocator's peak when the models run there)."""
    peaks = {}
    if resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peaks["peak_rss_mb"] = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    if device.type == "cuda":
        peaks["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


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
    `extra_models` plain causal LMs (e.g. an exported hard merge), scored alongside. Weight merges are built
    and scored one at a time; `peak_rss_mb` (and `peak_cuda_mb` on a GPU) is the process's peak memory so far.
    """
    if not data:
        raise DataError("no evaluation data: pass --data NAME=FILE")
    model.eval()
    expert_name = model.config.expert_name
    names = ["base", expert_name]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sweeps = parse_baselines(baselines)
    swept = {method for method, points in sweeps.items() if len(points) > 1}
    selecting = bool(swept and select_data)
    if selecting and any(Path(select_data[k]).resolve() == Path(v).resolve()
                         for k, v in data.items() if k in select_data):
        raise DataError("selection data must differ from the data being reported")
    blocks = load_domain_blocks(data, names, tokenizer, block_size, max_blocks)
    select_blocks = load_domain_blocks(select_data, names, tokenizer, block_size, max_blocks) if selecting else None
    context = BaselineContext(model.base, model.expert, expert_name, tokenizer, train_files or {}, seed)
    score_args = dict(base=model.base, expert=model.expert, pad_id=pad_id, batch_size=batch_size, progress=progress)
    references = ("base", expert_name)

    skipped = {}

    def build(method: str, point: float | None, **options) -> Scorer | None:
        try:
            return build_scorer(method, point, context, **options)
        except DataError as err:
            if baselines is not None:  # asked for by name: the user must hear why it cannot run
                raise
            skipped[label(method, point)] = str(err)
            warnings.warn(f"baseline {label(method, point)} skipped: {err}", UserWarning, stacklevel=3)
            return None

    # cheap scorers: one shared pass over the data, the experts' logits computed once per batch
    cheap: dict[str, Scorer] = {
        "superposed": SuperposedScorer(model), "base": ReferenceScorer("base"),
        f"expert:{expert_name}": ReferenceScorer("expert"),
    }
    order = list(cheap)  # the models' order in the result
    method_of: dict[str, str] = {}
    merges: list[tuple[str, float]] = []
    for method, points in sweeps.items():
        for point in points:
            name = label(method, point)
            order.append(name)
            method_of[name] = method
            if holds_model(method):
                merges.append((method, point))
            elif (scorer := build(method, point)) is not None:
                cheap[name] = scorer
    added_names = [*(other_runs or {}), *(extra_models or {})]
    clashes = sorted({n for n in added_names if n in order or added_names.count(n) > 1})
    if clashes:  # one would silently replace the other's numbers
        raise ValueError(f"model names {clashes} are taken: name other runs and extra models apart from each other "
                         f"and from {', '.join(order)}")
    added = {**{name: SuperposedScorer(run.eval()) for name, run in (other_runs or {}).items()},
             **{name: MergedModelScorer(extra.eval()) for name, extra in (extra_models or {}).items()}}
    cheap.update(added)
    order += list(added)
    reference_labels = {"base", f"expert:{expert_name}", "oracle"}
    results = score(cheap, blocks, agreement_for=set(cheap) - reference_labels, reference_names=references,
                    **score_args)
    chosen: dict[str, dict[str, dict]] = {}
    select_cheap = {name: s for name, s in cheap.items() if method_of.get(name) in swept}
    if select_blocks is not None and select_cheap:
        chosen.update(score(select_cheap, select_blocks, desc="select sweeps", **score_args))

    # weight merges: one model at a time, written into one reusable copy of the base
    scratch = None
    for method, point in merges:
        name = label(method, point)
        scorer = build(method, point, into=scratch)
        if scorer is None:
            continue
        scratch = scorer.model
        results.update(score({name: scorer}, blocks, agreement_for={name}, reference_names=references,
                             desc=name, **score_args))
        if select_blocks is not None and method in swept:
            chosen.update(score({name: scorer}, select_blocks, desc=f"select {name}", **score_args))
        del scorer
    del scratch
    gc.collect()  # hand the last merge's memory back before the caller goes on

    results = {name: results[name] for name in order if name in results}
    sweeps = {m: [p for p in points if label(m, p) in results] for m, points in sweeps.items()}
    sweeps = {m: points for m, points in sweeps.items() if points}
    best, selection = {}, {}
    if select_blocks is not None:
        for method, points in sweeps.items():
            if len(points) < 2:
                continue
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
        **_peak_memory_mb(model.base.device),
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
