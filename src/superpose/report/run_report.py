"""One self-contained HTML report of a run: evaluation table, analysis figures with what to look for, settings."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from superpose.model.settings import ModelSettings
from superpose.report.analysis.collect import MODELS
from superpose.report.analysis.run import ANALYSIS_JSON, GATES_FIGURE, GENERATION_METRICS, STACK_WEIGHTS_FIGURE
from superpose.report.html import ReportSection, detail_tables_from_eval, table_from_eval, write_report

__all__ = ["build_report", "figure_caption"]

_EMBEDDING = re.compile(r"embedding_layer(\d+)\.png")
_TEXT_GATES = re.compile(r"gates_(.+)\.png")  # `analyze --gate-text NAME=FILE`
SAMPLES_PER_MODEL = 2  # generated samples shown per domain and model (all are in analysis.json)

# Fixed figures: file -> (heading, caption). `{expert}` is replaced by the expert's domain name.
_FIGURES: dict[str, tuple[str, str]] = {
    "trajectories.png": (
        "Trajectories of the mean hidden state across layers",
        "Follow the superposed path: it should run along the base's on base-domain text and along the "
        "expert's on {expert} text; the layer labels show where it switches.",
    ),
    "layer_distances.png": (
        "Distance between models per layer",
        "On base-domain text base–superposed should stay small and on {expert} text expert–superposed should; "
        "base–expert is the gap the superposed model has to bridge.",
    ),
    "alpha.png": (
        "Learned blend weights α",
        "α near 0 means the layer follows the base, near 1 the expert: look for the depth where the "
        "superposed model hands over from one to the other.",
    ),
    STACK_WEIGHTS_FIGURE: (
        "Learned static blend weight of each stack",
        "Each stack's weight per layer (they sum to 1): look for the depth where the weight moves from the base "
        "to the experts ({expert}).",
    ),
    GATES_FIGURE: (
        "Gate weights on a code-switched line",
        "Each stack's weight at every layer (rows) and token (columns) of one line made of the first sentence of "
        "each domain's text (dashed lines: where the language changes); a token gate should hand the weight to "
        "the stack of each part's language, a static gate shows the same colour in every column.",
    ),
    "polysemantic.png": (
        "Polysemantic neurons",
        "Share of neurons whose mean activation barely differs between base-domain and {expert} text; a "
        "superposed model serving both domains with shared neurons scores higher than either expert.",
    ),
    "sparsity.png": (
        "Sparsity of hidden states",
        "Share of near-zero activations (|a| < 1e-4); a large rise would mean the autoencoders discard capacity.",
    ),
    "neuron_diversity.png": (
        "Neuron diversity",
        "Entropy of the contexts that most excite each active neuron; higher means neurons respond to more "
        "kinds of context (0 when no neuron reaches mean |activation| 0.1).",
    ),
    "mean_activation.png": (
        "Mean activation per layer",
        "Mean |activation| per layer and model; the superposed curve should stay within the range of the "
        "base's and expert's rather than blow up or collapse.",
    ),
    "generation_diversity.png": (
        "Generation diversity",
        "Distinct-n and n-gram entropies: higher is more diverse; Self-BLEU: lower is more diverse. The "
        "superposed model should not be markedly more repetitive than the base or the expert.",
    ),
}
_DEFAULT_CAPTION = "Additional analysis figure."


def figure_caption(name: str, expert: str) -> tuple[str, str]:
    """(heading, one-line caption saying what to look for) of an analysis PNG."""
    match = _EMBEDDING.fullmatch(name)
    if match:
        return (f"Hidden states after layer {match.group(1)} (2-D embedding)",
                f"Superposed points should sit on the base's cluster for base-domain inputs and on the "
                f"expert's for {expert} inputs.")
    match = _TEXT_GATES.fullmatch(name)
    if match:
        return (f"Gate weights on {match.group(1)}",
                "Each stack's weight at every layer (rows) and token (columns) of the start of a given text "
                "(`--gate-text`): where prose and code mix, a token gate should hand code tokens to the code stack.")
    heading, caption = _FIGURES.get(name, (Path(name).stem.replace("_", " ").capitalize(), _DEFAULT_CAPTION))
    return heading, caption.format(expert=expert)


def _figure_order(paths: list[Path]) -> list[Path]:
    """Embeddings by layer first, then the fixed figures in a reading order, then anything else by name."""
    def key(path: Path) -> tuple:
        match = _EMBEDDING.fullmatch(path.name)
        if match:
            return (0, int(match.group(1)), path.name)
        if path.name in _FIGURES:
            return (1, list(_FIGURES).index(path.name), path.name)
        return (2, 0, path.name)
    return sorted(paths, key=key)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return value


def _plain(value: Any) -> str:
    """Strings as they are, everything else (lists, numbers) as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _model_order(names, order: list[str] | None = None) -> list[str]:
    """The analysis' own model order when it saved one (analysis.json is key-sorted), else superposed, base,
    expert first; then any other name."""
    known = list(order or MODELS)
    return sorted(names, key=lambda m: (known.index(m) if m in known else len(known), m))


def _settings_section(run_dir: Path, config: dict[str, Any], analysis: dict[str, Any] | None) -> ReportSection:
    """Run settings from the run's config.json (and run.json if training wrote one), plus analysis settings."""
    settings = ModelSettings.from_saved(config.get("settings"))
    n_layers = int(config.get("num_hidden_layers") or 0)
    experts = config.get("experts") or {}
    rows = [
        ["run folder", str(run_dir)],
        ["base model", str(config.get("base_model"))],
        *[[f"expert ({name})", str(experts.get(name))] for name in _expert_names(config)],
        ["layers × hidden size", f"{n_layers} × {config.get('hidden_size')}"],
        ["variant", settings.variant],
        ["AE layers", ", ".join(map(str, settings.resolved_ae_layers(n_layers))) if n_layers else "–"],
        ["AE bottleneck", f"{settings.resolved_bottleneck():g}"],
        ["conv padding", settings.conv_padding],
        ["embedding blend", settings.embed_blend],
        ["head", settings.head],
        ["gate", settings.gate],
        ["graph", settings.graph],
        ["spline", f"{settings.n_control_points} control points, degree {settings.spline_degree}"],
    ]
    run_file = run_dir / "run.json"
    if run_file.is_file():
        run = _read_json(run_file, "run file")
        rows.append(["training steps", str(run.get("steps", "–"))])
    if analysis:
        used = analysis.get("settings", {})
        keys = ("layers", "samples", "block_size", "method", "threshold", "generations", "max_new_tokens", "seed")
        rows.extend([f"analysis {k.replace('_', ' ')}", _plain(used[k])] for k in keys if k in used)
    return ReportSection(heading="Settings", caption="How the run was built and how the analysis was made.",
                         headers=["setting", "value"], rows=rows)


def _numbers_section(analysis: dict[str, Any]) -> ReportSection | None:
    """Per chosen layer and model: the activation statistics behind the bar charts."""
    poly = analysis.get("polysemantic_percent") or {}
    if not poly:
        return None
    rows = []
    order = analysis.get("settings", {}).get("models")
    for layer, by_model in poly.items():
        for model in _model_order(by_model, order):
            value = by_model[model]
            sparsity = analysis.get("sparsity_percent", {}).get(layer, {}).get(model)
            diversity = analysis.get("neuron_diversity", {}).get(layer, {}).get(model)
            rows.append([layer, model, f"{value:.1f}", "–" if sparsity is None else f"{sparsity:.2f}",
                         "–" if diversity is None else f"{diversity:.3f}"])
    return ReportSection(heading="Activation statistics", caption="The numbers behind the bar charts above.",
                         headers=["layer", "model", "polysemantic %", "sparsity %", "diversity (nats)"], rows=rows)


def _samples_section(analysis: dict[str, Any]) -> ReportSection | None:
    """A few generated continuations per domain and model, so the diversity numbers can be sanity-checked."""
    generations = analysis.get("generations") or {}
    rows = []
    order = analysis.get("settings", {}).get("models")
    for domain, by_model in generations.items():
        prompts = by_model.get("prompts", [])
        for model in _model_order((m for m in by_model if m != "prompts"), order):
            for i, text in enumerate(by_model[model][:SAMPLES_PER_MODEL]):
                rows.append([domain, model, prompts[i] if i < len(prompts) else "", text])
    if not rows:
        return None
    metrics = ", ".join(GENERATION_METRICS.values())
    return ReportSection(heading="Generated samples",
                         caption=f"Sampled continuations (top-k 50, temperature 1); all of them and {metrics} "
                                 f"are in {ANALYSIS_JSON}.",
                         headers=["domain", "model", "prompt", "continuation"], rows=rows)


def _analysis_sections(analysis_dir: Path, expert: str) -> tuple[list[ReportSection], dict[str, Any] | None]:
    if not analysis_dir.is_dir():
        raise FileNotFoundError(f"analysis folder not found: {analysis_dir}")
    figures = _figure_order(list(analysis_dir.glob("*.png")))
    if not figures:
        raise ValueError(f"no analysis figures (*.png) in {analysis_dir}; run `superpose analyze` first")
    sections = []
    for path in figures:
        heading, caption = figure_caption(path.name, expert)
        sections.append(ReportSection(heading=heading, caption=caption, image=path))
    analysis = None
    if (analysis_dir / ANALYSIS_JSON).is_file():
        analysis = _read_json(analysis_dir / ANALYSIS_JSON, "analysis file")
        sections.extend(s for s in (_numbers_section(analysis), _samples_section(analysis)) if s is not None)
    return sections, analysis


def _expert_names(config: dict[str, Any]) -> list[str]:
    """Experts in stack order (config.json sorts the `experts` mapping, `expert_order` keeps the order)."""
    return list(config.get("expert_order") or config.get("experts") or ["expert"])


def build_report(
    run_dir: str | Path,
    out_dir: str | Path,
    eval_json_path: str | None = None,
    analysis_dir: str | None = None,
    title: str | None = None,
) -> Path:
    """Write `out_dir/index.html`: evaluation table, analysis figures with captions, settings. Returns its path.

    Either part may be missing, but not both: a report of settings alone would say nothing.
    """
    if eval_json_path is None and analysis_dir is None:
        raise ValueError("nothing to report: give an evaluation JSON, an analysis folder, or both")
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json", "run config")
    expert = " + ".join(_expert_names(config))
    sections: list[ReportSection] = []
    if eval_json_path is not None:
        evaluation = _read_json(Path(eval_json_path), "evaluation JSON")
        sections += [table_from_eval(evaluation), *detail_tables_from_eval(evaluation)]
    analysis = None
    if analysis_dir is not None:
        figure_sections, analysis = _analysis_sections(Path(analysis_dir), expert)
        sections.extend(figure_sections)
    sections.append(_settings_section(run_dir, config, analysis))
    return write_report(out_dir, title or f"Superposed model: base + {expert} ({run_dir.name})", sections)
