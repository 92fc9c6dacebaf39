"""The paper's analyses of a trained run: figures a person can look at plus every number in JSON.

`analyze` loads a run, collects hidden states of the superposed model and of each stack (the base and
every expert) run alone on text of each domain, and writes one PNG per analysis and `analysis.json` into
`out_dir`. It also shows the gate weights on one code-switched line made of each domain's first sentence.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm.auto import tqdm

from superpose.core.settings import SettingsError
from superpose.core.text_tables import format_table
from superpose.data.code_switch import split_sentences
from superpose.data.text import DataError, load_texts, tokenize_blocks
from superpose.report.analysis import plots, stats
from superpose.report.analysis.collect import DomainStates, collect_states, model_labels, model_pairs, pair_name
from superpose.report.gate_view import token_gates, visible_token

__all__ = ["analyze", "ANALYSIS_JSON", "FIGURES", "GATES_FIGURE", "STACK_WEIGHTS_FIGURE", "PROMPT_TOKENS",
           "EMBED_POINTS"]

ANALYSIS_JSON = "analysis.json"
GATES_FIGURE = "gates.png"
STACK_WEIGHTS_FIGURE = "stack_weights.png"  # replaces alpha.png when there are several experts
# Fixed figure names of a one-expert run (the embedding figures add one `embedding_layer{l}.png` per chosen layer).
FIGURES = ("trajectories.png", "layer_distances.png", "alpha.png", "polysemantic.png", "sparsity.png",
           "neuron_diversity.png", "mean_activation.png", "generation_diversity.png", GATES_FIGURE)
PROMPT_TOKENS = 8  # generation prompts are the first tokens of distinct lines
EMBED_POINTS = 300  # tokens per model per domain in the t-SNE / PCA scatter
GATE_LINE_TOKENS = 96  # at most this many tokens in the gate heat map's line, so its columns stay legible
GENERATION_METRICS = {"distinct_1": "distinct-1", "distinct_2": "distinct-2", "self_bleu": "self-BLEU",
                      "unigram_entropy": "H1 (nats)", "bigram_entropy": "H2 (nats)"}


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------

def _check_settings(samples: int, block_size: int, method: str, threshold: float, generations: int,
                    max_new_tokens: int) -> None:
    """Fail on bad settings before any model is loaded."""
    if method not in ("tsne", "pca"):
        raise SettingsError(f"method must be 'tsne' or 'pca', got {method!r}")
    if samples < 1:
        raise SettingsError(f"samples must be at least 1, got {samples}")
    if block_size < 2:
        raise SettingsError(f"block_size must be at least 2, got {block_size}")
    if threshold < 0:
        raise SettingsError(f"threshold must be non-negative, got {threshold}")
    if generations < 0 or max_new_tokens < 1:
        raise SettingsError("generations must be >= 0 (0 skips generation) and max_new_tokens >= 1")


def _run_config(run_dir: Path):
    """The run's config, read without loading any weights (so bad flags fail fast)."""
    from superpose.model.superposed import SuperposedConfig

    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a superposed run folder (no config.json)")
    return SuperposedConfig.from_pretrained(run_dir)


def _check_domains(data: dict[str, str], expert_names: list[str]) -> list[str]:
    """Domain names in stack order (base first); every stack's domain is needed to compare them."""
    known = ["base", *expert_names]
    unknown = [name for name in data if name not in known]
    if unknown:
        experts = ", ".join(map(repr, expert_names))
        whose = "the expert's" if len(expert_names) == 1 else "the experts'"
        raise DataError(f"--data names unknown domain(s) {unknown}; this run knows {known} "
                        f"('base' is the base model's domain, {experts} {whose})")
    missing = [name for name in known if name not in data]
    if missing:
        every = "both" if len(known) == 2 else f"all {len(known)}"
        raise DataError(f"analysis compares {every} domains: give --data for {missing} too ({' and '.join(known)})")
    return known


def _resolve_layers(layers: list[int] | None, n_layers: int, what: str, default: list[int]) -> list[int]:
    chosen = sorted(set(default if layers is None else layers))
    if not chosen:
        raise SettingsError(f"{what}: no layer given")
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise SettingsError(f"{what} {bad} do not exist in a model of {n_layers} layers (0-based)")
    return chosen


def _default_layers(n_layers: int, ae_layers: list[int]) -> list[int]:
    """The first AE layer (where the superposition starts being reshaped) and a middle layer."""
    first = ae_layers[0] if ae_layers else 0
    return sorted({first, n_layers // 2})


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------

def _activation_stats(collected: dict[str, DomainStates], domains: list[str], layers: list[int],
                      threshold: float, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """Polysemantic % (across all domains), sparsity % and neuron diversity per chosen layer and model."""
    models = collected[domains[0]].models
    out: dict[str, dict[str, dict[str, float]]] = {"polysemantic_percent": {}, "sparsity_percent": {},
                                                   "neuron_diversity": {}}
    contexts = [c for d in domains for c in collected[d].contexts]  # N_all bags, rows of `acts` below
    for layer in layers:
        key = str(layer)
        for name in out:
            out[name][key] = {}
        for model in models:
            per_domain = [collected[d].states[layer][model] for d in domains]  # (N_k, d) each
            acts = np.concatenate(per_domain)  # (N_all, d)
            out["polysemantic_percent"][key][model] = stats.polysemantic_percent_across(per_domain, threshold)
            out["sparsity_percent"][key][model] = stats.sparsity_percent(acts)
            out["neuron_diversity"][key][model] = stats.neuron_diversity(acts, contexts, seed=seed)
    return out


def _trajectories(collected: dict[str, DomainStates], layers: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """Per domain, each model's mean state at `layers` projected to a PCA plane shared by all models."""
    return {domain: stats.pca_trajectory({m: d.mean_state[m][layers] for m in d.models})  # (len(layers), 2)
            for domain, d in collected.items()}


def _embeddings(collected: dict[str, DomainStates], layer: int, method: str,
                seed: int) -> dict[str, dict[str, np.ndarray]]:
    """2-D view of one layer: a subsample of the same tokens for every model, embedded jointly so panels share axes."""
    rng = np.random.default_rng(seed)
    chunks: list[tuple[str, str, np.ndarray]] = []
    for domain, d in collected.items():
        rows = np.sort(rng.choice(d.n_tokens, size=min(EMBED_POINTS, d.n_tokens), replace=False))  # (n,)
        chunks.extend((domain, m, d.states[layer][m][rows]) for m in d.models)  # (n, hidden) each
    points = stats.embed_2d(np.concatenate([c[2] for c in chunks]), method=method, seed=seed)  # (sum n, 2)
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    start = 0
    for domain, model, pts in chunks:
        out[domain][model] = points[start:start + len(pts)]
        start += len(pts)
    return dict(out)


# ---------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------

def _prompts(path: str, tokenizer, count: int) -> list[list[int]]:
    """The first PROMPT_TOKENS token ids of the first `count` distinct lines of a domain's file."""
    prompts = []
    for line in dict.fromkeys(load_texts(path)):  # distinct lines, file order
        ids = tokenizer(line, add_special_tokens=False)["input_ids"][:PROMPT_TOKENS]
        if ids:
            prompts.append(ids)
        if len(prompts) == count:
            break
    return prompts


def _sample(lm, prompts: list[list[int]], tokenizer, max_new_tokens: int, seed: int) -> list[str]:
    """Sampled continuations (prompt removed), one per prompt.

    Prompts of equal length share a batch, so no padding is needed: left padding is not something
    every model here is tested with, and it would change what the superposed autoencoders see.
    """
    torch.manual_seed(seed)  # same seed for every model, so their samples are comparable
    device = next(lm.parameters()).device
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(prompts):
        by_length[len(ids)].append(i)
    texts = [""] * len(prompts)
    for length, rows in sorted(by_length.items()):
        ids = torch.tensor([prompts[i] for i in rows], device=device)  # (b, length)
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=50, top_p=1.0,
                          temperature=1.0, max_new_tokens=max_new_tokens,
                          pad_token_id=tokenizer.pad_token_id)  # (b, length + new)
        for i, row in zip(rows, out[:, length:]):
            texts[i] = tokenizer.decode(row, skip_special_tokens=True)
    return texts


def _generations(model, tokenizer, data: dict[str, str], domains: list[str], count: int, max_new_tokens: int,
                 seed: int, progress: bool) -> tuple[dict[str, Any], dict[str, dict[str, dict]]]:
    """Samples of the superposed model and of each stack alone on each domain's prompts, and their diversity."""
    lms = {"superposed": model, **dict(zip(model_labels(model.config.expert_names)[1:], model.stack_models))}
    samples: dict[str, Any] = {}
    diversity: dict[str, dict[str, dict]] = {}
    with torch.no_grad(), tqdm(total=len(domains) * len(lms), desc="generation", unit="run",
                               disable=not progress) as bar:
        for domain in domains:
            prompts = _prompts(data[domain], tokenizer, count)
            if not prompts:
                raise DataError(f"{data[domain]}: no line tokenises to a generation prompt")
            samples[domain] = {"prompts": [tokenizer.decode(p, skip_special_tokens=True) for p in prompts]}
            diversity[domain] = {}
            for name, lm in lms.items():
                texts = _sample(lm, prompts, tokenizer, max_new_tokens, seed)
                samples[domain][name] = texts
                diversity[domain][name] = stats.generation_diversity(texts)
                bar.update(1)
    return samples, diversity


# ---------------------------------------------------------------------------
# gates on a code-switched line
# ---------------------------------------------------------------------------

def _first_sentence(texts: list[str]) -> str:
    """The first sentence of a domain's first document (load_texts never returns an empty one)."""
    return split_sentences(texts[0])[0]


def _gate_line(texts: dict[str, list[str]], domains: list[str], tokenizer, budget: int) -> tuple[str, list[int]]:
    """One code-switched line: each domain's first sentence in domain order, each cut to an equal share of
    `budget` tokens; and the token index where each later part starts (where the language switches)."""
    share = max(1, (budget - len(domains)) // len(domains))  # the joining spaces may cost a token each
    pieces = []
    for domain in domains:
        ids = tokenizer(_first_sentence(texts[domain]), add_special_tokens=False)["input_ids"][:share]
        pieces.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    pieces = [p for p in pieces if p]  # a sentence of special tokens only leaves nothing to show
    line = " ".join(pieces)
    boundaries = [len(tokenizer(" ".join(pieces[:k]), add_special_tokens=False)["input_ids"])
                  for k in range(1, len(pieces))]
    return line, boundaries


def _gates(model, tokenizer, texts: dict[str, list[str]], domains: list[str], budget: int) -> dict[str, Any]:
    """Each stack's weight per layer and token of the code-switched line, with what is needed to plot it."""
    line, boundaries = _gate_line(texts, domains, tokenizer, budget)
    tokens, weights = token_gates(model, tokenizer, line)  # weights (L, T, M)
    return {"text": line, "tokens": tokens, "boundaries": boundaries, "stacks": model.stack_names,
            "gate": model.settings.gate, "weights": weights.numpy()}


def _text_gates(model, tokenizer, text: str, budget: int) -> dict[str, Any]:
    """Each stack's weight per layer and token of the first `budget` tokens of a given text (a docs paragraph)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
    excerpt = tokenizer.decode(ids, skip_special_tokens=True)
    tokens, weights = token_gates(model, tokenizer, excerpt)
    return {"text": excerpt, "tokens": tokens, "boundaries": [], "stacks": model.stack_names,
            "gate": model.settings.gate, "weights": weights.numpy()}


def gate_text_figure(name: str) -> str:
    return f"gates_{name}.png"


def _plot_text_gates(gates: dict[str, Any], name: str, path: Path) -> Path:
    static = " (static gate: the same at every token)" if gates["gate"] == "static" else ""
    return plots.plot_gate_heatmap(np.asarray(gates["weights"]), [visible_token(t) for t in gates["tokens"]],
                                   gates["stacks"], path, [], title=f"Gate weight per layer and token, {name}{static}")


def _plot_gates(gates: dict[str, Any], domains: list[str], path: Path) -> Path:
    static = " (static gate: the same at every token)" if gates["gate"] == "static" else ""
    return plots.plot_gate_heatmap(np.asarray(gates["weights"]), [visible_token(t) for t in gates["tokens"]],
                                   gates["stacks"], path, gates["boundaries"],
                                   title=f"Gate weight per layer and token, text {' → '.join(domains)}{static}")


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------

def _plot_layer_curves(values: dict[str, dict[str, list[float]]], layer_ids: list[int], path: Path, title: str,
                       ylabel: str) -> Path:
    """One panel per domain, one line per model over layers (plots.py has no generic per-layer curve)."""
    fig = Figure(figsize=(4.6 * len(values), 4.2))
    FigureCanvasAgg(fig)
    for k, (domain, by_model) in enumerate(values.items()):
        ax = fig.add_subplot(1, len(values), k + 1)
        for i, (model, series) in enumerate(by_model.items()):
            ax.plot(layer_ids, series, "-o", ms=3, color=plots.colour_for(model, i), label=model)
        ax.set_title(f"input: {domain}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=plots.DPI)
    return path


def _by_layer_label(values: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {f"layer {layer}": by_model for layer, by_model in values.items()}


def _generation_bars(diversity: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Groups 'domain: metric', series = models; a missing Self-BLEU (one text) becomes a gap."""
    groups: dict[str, dict[str, float]] = {}
    for domain, by_model in diversity.items():
        for key, label in GENERATION_METRICS.items():
            groups[f"{domain}: {label}"] = {
                model: float("nan") if numbers[key] is None else numbers[key] for model, numbers in by_model.items()
            }
    return groups


def _write_figures(out_dir: Path, result: dict[str, Any], embeddings: dict[int, dict], method: str) -> list[Path]:
    n_layers = result["settings"]["num_layers"]
    all_layers = list(range(n_layers))
    written = []
    for layer, points in embeddings.items():
        title = f"{'t-SNE' if method == 'tsne' else 'PCA'} of hidden states after layer {layer}"
        written.append(plots.plot_embedding_panels(points, out_dir / f"embedding_layer{layer}.png", title))
    traj = {d: {m: np.asarray(p) for m, p in by_model.items()} for d, by_model in result["trajectories"].items()}
    written.append(plots.plot_trajectories(traj, result["settings"]["trajectory_layers"], out_dir / "trajectories.png"))
    written.append(plots.plot_layer_distances(result["l2_distances"], all_layers, out_dir / "layer_distances.png"))
    if "alpha" in result:
        written.append(plots.plot_alpha(np.asarray(result["alpha"]), out_dir / "alpha.png",
                                        title="Blend weights α (0 = base, 1 = expert)"))
    else:
        written.append(plots.plot_stack_weights(np.asarray(result["static_weights"]), result["settings"]["stacks"],
                                                out_dir / STACK_WEIGHTS_FIGURE))
    compared = "base vs expert domain" if "alpha" in result else "across all domains"
    bars = (("polysemantic_percent", "polysemantic.png", f"Polysemantic neurons ({compared})", "% of neurons"),
            ("sparsity_percent", "sparsity.png", "Sparsity (|a| < 1e-4)", "% of activations"),
            ("neuron_diversity", "neuron_diversity.png", "Neuron diversity (entropy of top-context clusters)",
             "entropy (nats)"))
    for key, name, title, ylabel in bars:
        written.append(plots.plot_grouped_bars(_by_layer_label(result[key]), out_dir / name, title, ylabel))
    written.append(_plot_layer_curves(result["mean_activation"], all_layers, out_dir / "mean_activation.png",
                                      "Mean |activation| per layer", "mean |activation|"))
    if result["generation_diversity"]:
        written.append(plots.plot_grouped_bars(_generation_bars(result["generation_diversity"]),
                                               out_dir / "generation_diversity.png",
                                               "Generation diversity (Self-BLEU: lower = more diverse)", "value"))
    written.append(_plot_gates(result["gates"], result["settings"]["domains"], out_dir / GATES_FIGURE))
    for name, gates in result.get("text_gates", {}).items():
        written.append(_plot_text_gates(gates, name, out_dir / gate_text_figure(name)))
    return written


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------

def _summary(result: dict[str, Any]) -> str:
    rows = [[f"{layer}", model, result["polysemantic_percent"][layer][model], result["sparsity_percent"][layer][model],
             result["neuron_diversity"][layer][model]]
            for layer in result["polysemantic_percent"] for model in result["settings"]["models"]]
    text = format_table(["layer", "model", "polysemantic %", "sparsity %", "diversity"], rows,
                        title="Activation statistics")
    if result["generation_diversity"]:
        gen_rows = [[domain, model, numbers["distinct_1"], numbers["distinct_2"],
                     "–" if numbers["self_bleu"] is None else numbers["self_bleu"]]
                    for domain, by_model in result["generation_diversity"].items()
                    for model, numbers in by_model.items()]
        text += "\n\n" + format_table(["domain", "model", "distinct-1", "distinct-2", "self-BLEU"], gen_rows,
                                      title="Generation diversity")
    return text


def _jsonable(value: Any) -> Any:
    """Numpy arrays and scalars as plain lists and floats, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def analyze(
    run_dir: str | Path,
    data: dict[str, str],
    out_dir: str | Path,
    layers: list[int] | None = None,
    samples: int = 32,
    block_size: int = 64,
    method: str = "tsne",
    threshold: float = 0.05,
    trajectory_layers: list[int] | None = None,
    generations: int = 8,
    max_new_tokens: int = 40,
    seed: int = 0,
    progress: bool = True,
    dtype: str = "float32",
    device: str | torch.device | None = "cpu",
    device_map: str | None = None,
    gate_texts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run every analysis of the paper on a trained run and write its figures and `analysis.json` to `out_dir`.

    `gate_texts` maps a name to a text file whose first document (its first tokens) gets a gate heat map of its
    own, `gates_<name>.png`: e.g. a README paragraph that mixes prose and code.
    `data` maps each domain ('base' and every expert's name) to a text file. `layers` (default: first AE
    layer and the middle layer) get the per-token analyses; all layers get mean activation and L2
    distances; `trajectory_layers` (default all) the PCA trajectory. `generations = 0` skips sampling.
    Returns the dict written to `analysis.json`.
    """
    from superpose.core.loading import load_tokenizer
    from superpose.model.superposed import SuperposedModel

    started = time.perf_counter()
    _check_settings(samples, block_size, method, threshold, generations, max_new_tokens)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = _run_config(run_dir)
    domains = _check_domains(data, config.expert_names)
    models = model_labels(config.expert_names)
    texts = {d: load_texts(data[d]) for d in domains}
    extra = {name: load_texts(path) for name, path in (gate_texts or {}).items()}  # bad files fail before loading
    n_layers = config.num_hidden_layers
    ae_layers = config.model_settings.resolved_ae_layers(n_layers)
    layers = _resolve_layers(layers, n_layers, "layers", _default_layers(n_layers, ae_layers))
    trajectory_layers = _resolve_layers(trajectory_layers, n_layers, "trajectory layers", list(range(n_layers)))
    if config.max_position_embeddings and block_size > config.max_position_embeddings:
        raise SettingsError(f"block_size {block_size} exceeds the model's {config.max_position_embeddings} positions")

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(run_dir))
    blocks = {d: tokenize_blocks(texts[d], tokenizer, block_size, max_blocks=samples) for d in domains}
    model = SuperposedModel.from_pretrained(run_dir, dtype=dtype, device=device, device_map=device_map)
    collected = collect_states(model, blocks, layers, pad_id=tokenizer.pad_token_id or 0, progress=progress)

    result: dict[str, Any] = {
        "settings": {
            "run_dir": str(run_dir), "data": {d: str(data[d]) for d in domains}, "domains": domains,
            "expert_names": config.expert_names, "stacks": domains,
            "models": list(models), "num_layers": n_layers, "ae_layers": ae_layers,
            "variant": config.model_settings.variant, "layers": layers, "trajectory_layers": trajectory_layers,
            "samples": samples, "block_size": block_size, "method": method, "threshold": threshold,
            "generations": generations, "max_new_tokens": max_new_tokens, "seed": seed,
            "embedding_points_per_model": EMBED_POINTS, "prompt_tokens": PROMPT_TOKENS,
        },
        "tokens": {d: collected[d].n_tokens for d in domains},
        "sequences": {d: collected[d].n_sequences for d in domains},
    }
    result.update(_activation_stats(collected, domains, layers, threshold, seed))
    result["mean_activation"] = {d: {m: collected[d].mean_abs[m] for m in models} for d in domains}
    result["l2_distances"] = {d: {pair_name(a, b): collected[d].l2[pair_name(a, b)] for a, b in model_pairs(models)}
                              for d in domains}
    result["trajectories"] = _trajectories(collected, trajectory_layers)
    with torch.no_grad():  # one expert: the paper's alpha (L,) / (L, d); several: (L, M) / (L, M, d) over the stacks
        key, weights = ("alpha", model.alphas()) if len(domains) == 2 else ("static_weights", model.static_weights())
        result[key] = weights.detach().float().cpu().numpy()
    result["gates"] = _gates(model, tokenizer, texts, domains, min(GATE_LINE_TOKENS, block_size))
    if gate_texts:
        result["text_gates"] = {name: _text_gates(model, tokenizer, extra[name][0], GATE_LINE_TOKENS)
                                for name in gate_texts}
    embeddings = {layer: _embeddings(collected, layer, method, seed) for layer in layers}
    del collected  # the per-token states are the bulk of the memory; generation does not need them

    result["generations"], result["generation_diversity"] = (
        _generations(model, tokenizer, data, domains, generations, max_new_tokens, seed, progress)
        if generations else ({}, {}))
    result = _jsonable(result)
    figures = _write_figures(out_dir, result, embeddings, method)
    result["figures"] = [p.name for p in figures]
    result["seconds"] = time.perf_counter() - started
    (out_dir / ANALYSIS_JSON).write_text(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False),
                                         encoding="utf-8")
    if progress:
        print(_summary(result))
        print(f"{len(figures)} figures and {ANALYSIS_JSON} written to {out_dir} in {result['seconds']:.1f} s")
    return result
