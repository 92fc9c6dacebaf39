"""Score the superposed model and every baseline per domain on held-out text, honestly.

Perplexity is token-weighted over all scored tokens (padding excluded). Sweeps (e.g. linear:0.1..0.9)
are resolved on separate selection data, never on the data being reported.

Memory: the shared-pass scorers (superposed, each stack alone, mixtures, routers, oracles, models passed in)
share one pass and every stack's logits of each batch; each weight merge is as large as the base, so the
merges are built, scored and replaced one at a time in one reusable model (peak: the stacks, one merge).

`evaluate` is a short sequence of steps, each its own function: `selection_data` (which files choose the
sweeps), `plan_scorers` and `add_models` (what is scored, under which names), `run_plan` (the passes over
the data, through `scoring.score`), `choose_best` (each sweep's point) and `assemble_result` (with
`throughput`).
"""
from __future__ import annotations

import gc
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from superpose.compare import (
    REGISTRY,
    BaselineContext,
    MergedModelScorer,
    Scorer,
    build_scorer,
    holds_model,
    label,
    parse_baselines,
)
from superpose.core.loading import peak_memory_mb
from superpose.data.text import DataError
from superpose.evaluation.scoring import EvalSet, load_sets, score
from superpose.model.superposed import SuperposedModel


class SuperposedScorer(Scorer):
    uses_references = False

    def __init__(self, model: SuperposedModel):
        self.model = model
        self.returns_log_probs = model.settings.head == "mixture"  # the stacks' distributions, mixed

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, refs):
        gated = self.model.blend.gate is not None
        out = self.model(input_ids, attention_mask=attention_mask, output_gates=gated)
        if gated:  # per-token gates: the last layer's weights, (M, B, T), as the mixtures report theirs
            self.last_weights = out.gate_weights[-1].permute(2, 0, 1)
        return out.logits

    def stacks(self, models: int) -> float:
        return float(len(self.model.stacks))


class ReferenceScorer(Scorer):
    """One model alone (every model's logits are computed once per batch for everyone)."""

    def __init__(self, name: str):
        self.name = name

    def logits(self, input_ids, attention_mask, refs):
        return refs.logits[self.name]

    def extra_seconds(self, refs):
        return refs.seconds[self.name]


def _mean_log_ppl(per_domain: dict[str, dict]) -> float:
    return sum(math.log(m["ppl"]) for m in per_domain.values()) / len(per_domain)


GROUPS = ("superposed", "single stacks", "mixtures and routers", "weight merges", "models passed in",
          "bounds (read the answer)")  # the order in which reports show the models


def model_group(name: str, reads_answer: bool) -> str:
    """Which of `GROUPS` a scored model belongs to, from its name (a plain model passed in is named by the caller
    and cannot be told from a superposed run by name alone: `evaluate` records it)."""
    method = name.partition(":")[0]
    if reads_answer:
        return GROUPS[5]
    if name == "base" or name.startswith("expert:"):
        return GROUPS[1]
    if method in REGISTRY:
        return GROUPS[3] if REGISTRY[method].holds_model else GROUPS[2]
    return GROUPS[0]


def stack_models(model: SuperposedModel) -> dict[str, torch.nn.Module]:
    """The superposed model's frozen stacks by name: "base" first, then each expert."""
    return {"base": model.base, **model.expert_models}


# ---- the steps of `evaluate` ----------------------------------------------------------------------------


def selection_data(sweeps: dict[str, list], data: dict[str, str], select_data: dict[str, str] | None
                   ) -> dict[str, str] | None:
    """The files that choose each sweep's best point: None when no method sweeps or none were given. They must
    not be the reported data, under any name."""
    if not select_data or not any(len(points) > 1 for points in sweeps.values()):
        return None
    shared = {str(Path(p).resolve()) for p in select_data.values()} & {str(Path(p).resolve()) for p in data.values()}
    if shared:
        raise DataError(f"selection data must differ from the data being reported: {', '.join(sorted(shared))} is both")
    return select_data


@dataclass
class Plan:
    """What one evaluation scores, in the result's order.

    `shared`: scorers that share one pass over the data (and each batch's reference logits); `merges`: the
    weight merges' points, built and scored one at a time; `method_of`: each baseline's method; `skipped`: the
    default baselines that could not be built, and why.
    """

    shared: dict[str, Scorer]
    merges: list[tuple[str, object]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    method_of: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reference_names: list[str] = field(default_factory=list)  # the stacks alone (base, expert:NAME)


def plan_scorers(model: SuperposedModel, sweeps: dict[str, list], context: BaselineContext, strict: bool) -> Plan:
    """The superposed model, each stack alone, and every baseline point. A baseline that cannot be built (e.g. a
    router without training files) is skipped with a warning, unless `strict` (the user asked for it by name)."""
    references = {"base": "base", **{f"expert:{name}": name for name in list(context.models)[1:]}}
    plan = Plan({"superposed": SuperposedScorer(model), **{key: ReferenceScorer(n) for key, n in references.items()}},
                reference_names=list(references))
    plan.order = list(plan.shared)
    for method, points in sweeps.items():
        for point in points:
            name = label(method, point)
            plan.order.append(name)
            plan.method_of[name] = method
            if holds_model(method):
                plan.merges.append((method, point))
            elif (scorer := build_or_skip(plan, method, point, context, strict)) is not None:
                plan.shared[name] = scorer
    return plan


def build_or_skip(plan: Plan, method: str, point, context: BaselineContext, strict: bool, **options) -> Scorer | None:
    try:
        return build_scorer(method, point, context, **options)
    except DataError as err:
        if strict:  # asked for by name: the user must hear why it cannot run
            raise
        plan.skipped[label(method, point)] = str(err)
        warnings.warn(f"baseline {label(method, point)} skipped: {err}", UserWarning, stacklevel=3)
        return None


def add_models(plan: Plan, other_runs: dict[str, SuperposedModel] | None,
               extra_models: dict[str, torch.nn.Module] | None) -> None:
    """Further superposed runs and plain causal LMs, under names that no scored model has."""
    added_names = [*(other_runs or {}), *(extra_models or {})]
    clashes = sorted({n for n in added_names if n in plan.order or added_names.count(n) > 1})
    if clashes:  # one would silently replace the other's numbers
        raise ValueError(f"model names {clashes} are taken: name other runs and extra models apart from each other "
                         f"and from {', '.join(plan.order)}")
    added = {**{name: SuperposedScorer(run.eval()) for name, run in (other_runs or {}).items()},
             **{name: MergedModelScorer(extra.eval()) for name, extra in (extra_models or {}).items()}}
    plan.shared.update(added)
    plan.order += list(added)


def run_plan(plan: Plan, context: BaselineContext, sets: dict[str, EvalSet], select_sets: dict[str, EvalSet] | None,
             swept: set[str], agreement: bool, strict: bool, every_point: bool = False,
             **score_args) -> tuple[dict, dict, dict]:
    """Score every model on `sets` (and each swept point on `select_sets`): (results, selection results, stacks
    run per token). Agreement with the references is measured only when asked for: each merge then runs the
    base and every expert again on every batch.

    A swept weight merge costs one pass of a whole model per point and set, so with selection sets only its
    chosen point is scored on `sets`, unless `every_point` (the shared scorers are cheap and report every point).
    """
    no_agreement = set(plan.reference_names) | {name for name, s in plan.shared.items() if s.reads_answer}
    agreement_for = set(plan.shared) - no_agreement if agreement else set()
    results = score(plan.shared, sets, agreement_for=agreement_for, **score_args)
    compute = {name: scorer.stacks(len(context.models)) for name, scorer in plan.shared.items()}
    chosen: dict[str, dict[str, dict]] = {}
    select_shared = {name: s for name, s in plan.shared.items() if plan.method_of.get(name) in swept}
    if select_sets is not None and select_shared:
        chosen.update(score(select_shared, select_sets, desc="select sweeps", **score_args))
    scratch = None  # weight merges: one model at a time, written into one reusable copy of the base

    def merged(method: str, point) -> Scorer | None:
        nonlocal scratch
        scorer = build_or_skip(plan, method, point, context, strict, into=scratch)
        if scorer is not None:
            scratch = scorer.model
            compute[label(method, point)] = scorer.stacks(len(context.models))
        return scorer

    def report(name: str, scorer: Scorer) -> None:
        results.update(score({name: scorer}, sets, agreement_for={name} if agreement else set(), desc=name,
                             **score_args))

    selecting = select_sets is not None
    later: dict[str, list] = {}  # swept merges whose chosen point alone is reported, after the selection
    for method, point in plan.merges:
        name = label(method, point)
        chosen_only = selecting and method in swept and not every_point
        scorer = merged(method, point)
        if scorer is None:
            continue
        if not chosen_only:
            report(name, scorer)
        if selecting and method in swept:
            chosen.update(score({name: scorer}, select_sets, desc=f"select {name}", **score_args))
        if chosen_only:
            later.setdefault(method, []).append(point)
        del scorer
    for method, points in later.items():
        point = best_point(method, points, chosen)
        scorer = merged(method, point)
        report(label(method, point), scorer)
        del scorer
    del scratch
    gc.collect()  # hand the last merge's memory back before the caller goes on
    return results, chosen, compute


def best_point(method: str, points: list, chosen: dict[str, dict[str, dict]]):
    """The sweep's point with the lowest geometric-mean perplexity over the selection sets."""
    return min(points, key=lambda p: _mean_log_ppl(chosen[label(method, p)]))


def choose_best(sweeps: dict[str, list], chosen: dict[str, dict[str, dict]]) -> tuple[dict, dict]:
    """Each sweep's best point by geometric-mean perplexity over the selection sets, and every point's value."""
    best, selection = {}, {}
    for method, points in sweeps.items():
        if len(points) < 2:
            continue
        best[method] = label(method, best_point(method, points, chosen))
        selection[method] = {label(method, p): math.exp(_mean_log_ppl(chosen[label(method, p)])) for p in points}
    return best, selection


def throughput(results: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Tokens per second of each model over every set; takes the per-set 'seconds' out of the metrics."""
    speeds = {}
    for name, per_set in results.items():
        tokens = sum(m["tokens"] for m in per_set.values())
        seconds = sum(m.pop("seconds") for m in per_set.values())
        speeds[name] = tokens / seconds if seconds > 0 else float("inf")
    return speeds


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
    agreement: bool = False,
    every_point: bool = False,
    progress: bool = True,
) -> dict:
    ("""Per set and model: perplexity, accuracy, tokens and throughput; with `agreement`, also the mean per-token
    Jensen-Shannon divergence and cosine similarity to each stack's distribution and to their average.

    A set named like a model (`base`, an expert's name) is that model's labelled domain; any other name is an
    unlabelled set. A JSONL file with `spans` (from `mix-data`) also gets perplexity per source language, on the
    first tokens after each switch, and, for methods with per-token weights, the share of tokens whose heaviest
    weight is on the source's own model. `other_runs` are further superposed models over the same stacks,
    `extra_models` plain causal LMs (e.g. an exported hard merge). Weight merges are built and scored one at a
    time; of a swept merge only the chosen point is scored on `data` unless `every_point`; `peak_rss_mb` (and """
     """`peak_cuda_mb` on a GPU) is the process's peak memory so far.
    """)
    if not data:
        raise DataError("no evaluation data: pass --data NAME=FILE")
    model.eval()
    stacks = stack_models(model)
    sweeps = parse_baselines(baselines)
    select_data = selection_data(sweeps, data, select_data)
    sets = load_sets(data, list(stacks), tokenizer, block_size, max_blocks)
    select_sets = load_sets(select_data, list(stacks), tokenizer, block_size, max_blocks) if select_data else None
    context = BaselineContext(stacks, tokenizer, train_files or {}, seed)
    strict = baselines is not None
    plan = plan_scorers(model, sweeps, context, strict)
    add_models(plan, other_runs, extra_models)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    swept = {method for method, points in sweeps.items() if len(points) > 1}
    results, chosen, compute = run_plan(plan, context, sets, select_sets, swept, agreement, strict, every_point,
                                        stacks=stacks, pad_id=pad_id, batch_size=batch_size, progress=progress)
    sweeps = {m: kept for m, points in sweeps.items()
              if (kept := [p for p in points if label(m, p) in results or label(m, p) in chosen])}
    best, selection = choose_best(sweeps, chosen) if select_sets is not None else ({}, {})
    settings = {"data": data, "select_data": select_data or {},
                "baselines": {m: [list(p) if isinstance(p, tuple) else p for p in points]
                              for m, points in sweeps.items()},
                "block_size": block_size, "batch_size": batch_size, "max_blocks": max_blocks, "seed": seed,
                "agreement": agreement, "every_point": every_point, "base": model.config.base_model,
                "experts": model.config.experts, "superposed": model.config.settings}
    return assemble_result(model, sets, plan, results, compute, best, selection, set(extra_models or {}), settings)


def assemble_result(model: SuperposedModel, sets: dict[str, EvalSet], plan: Plan, results: dict, compute: dict,
                    best: dict, selection: dict, plain_models: set[str], settings: dict) -> dict:
    """The result mapping: every model's metrics in the plan's order, its throughput, compute and group."""
    results = {name: results[name] for name in plan.order if name in results}
    bounds = [name for name, scorer in plan.shared.items() if scorer.reads_answer]
    return {
        "domains": list(sets),
        "labels": {name: eval_set.label for name, eval_set in sets.items()},
        "sources": {name: eval_set.sourced.names for name, eval_set in sets.items() if eval_set.sourced},
        "models": results,
        "best": best,
        "selection_geomean_ppl": selection,
        "throughput_tokens_per_s": throughput(results),
        "stacks_per_token": {name: compute[name] for name in results},
        "reads_answer": bounds,
        "groups": {name: GROUPS[4] if name in plain_models else model_group(name, name in bounds) for name in results},
        "skipped_baselines": plan.skipped,
        **peak_memory_mb(model.base.device),
        "settings": settings,
    }


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
    return path
