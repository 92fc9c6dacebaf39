"""`superpose analyze`, `superpose report` and `superpose gates`: thin wrappers over `analysis.run.analyze`,
`analysis.reporting.build_report` and `gate_view.show_gates`.

`add_parsers(sub)` adds the three subcommands to the main parser's subparsers; each sets `func`, which takes
the parsed namespace and raises DataError / ValueError / FileNotFoundError for the main CLI to report.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from superpose.core.settings import DTYPES, SettingsError

__all__ = ["add_parsers", "cmd_analyze", "cmd_report", "cmd_gates"]


def _parse_layers(text: str | None, flag: str) -> list[int] | None:
    """'1,3' -> [1, 3]; None (flag not given) -> None so the library picks its default."""
    if text is None:
        return None
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise SettingsError(f"{flag} expects comma-separated 0-based layer numbers, got {text!r}") from err
    if not layers:
        raise SettingsError(f"{flag} names no layer")
    return layers


def _add_analysis_flags(parser: argparse.ArgumentParser, title: str) -> None:
    g = parser.add_argument_group(title)
    g.add_argument("--layers", help="comma-separated 0-based layers for the t-SNE/PCA, polysemantic, sparsity and "
                                    "diversity analyses (default: first autoencoder layer and the middle layer)")
    g.add_argument("--trajectory-layers", help="comma-separated layers of the mean-state PCA trajectory (default: all)")
    g.add_argument("--samples", type=int, default=32, help="sequences per domain (default 32)")
    g.add_argument("--block-size", type=int, default=64, help="tokens per sequence (default 64)")
    g.add_argument("--method", choices=["tsne", "pca"], default="tsne",
                   help="2-D embedding of hidden states (default tsne)")
    g.add_argument("--threshold", type=float, default=0.05,
                   help="a neuron is polysemantic when |mu_a - mu_b| / max(|mu_a|, |mu_b|) is below this "
                        "(default 0.05)")
    g.add_argument("--generations", type=int, default=8,
                   help="prompts per domain for the generation-diversity analysis; 0 skips it (default 8)")
    g.add_argument("--max-new-tokens", type=int, default=40, help="tokens sampled per prompt (default 40)")
    g.add_argument("--seed", type=int, default=0, help="random seed for subsampling, t-SNE and sampling (default 0)")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype the frozen stacks are loaded in (default float32)")
    g.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--gate-text", action="append", metavar="NAME=FILE",
                   help="also draw the gate heat map of this file's first document (e.g. a README paragraph "
                        "that mixes prose and code); repeat")
    g.add_argument("--device-map", help="spread the frozen stacks over the available devices: auto, balanced, "
                                        "balanced_low_0 or sequential (Hugging Face / accelerate)")


def _run_analysis(args: argparse.Namespace, out_dir: str | Path) -> dict:
    from superpose.data.text import parse_named_paths
    from superpose.report.analysis.run import analyze

    return analyze(
        args.run_dir, parse_named_paths(args.data, flag="--data"), out_dir,
        layers=_parse_layers(args.layers, "--layers"),
        samples=args.samples, block_size=args.block_size, method=args.method, threshold=args.threshold,
        trajectory_layers=_parse_layers(args.trajectory_layers, "--trajectory-layers"),
        generations=args.generations, max_new_tokens=args.max_new_tokens, seed=args.seed, dtype=args.dtype,
        device=args.device, device_map=args.device_map,
        gate_texts=parse_named_paths(args.gate_text, flag="--gate-text"),
    )


def cmd_analyze(args: argparse.Namespace) -> None:
    _run_analysis(args, args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from superpose.report.run_report import build_report

    if args.analysis and args.data:
        raise SettingsError("give --analysis (an existing analysis folder) or --data (to analyse now), not both")
    if not (args.eval_json or args.analysis or args.data):
        raise SettingsError("nothing to report: give --eval, --analysis and/or --data")
    analysis_dir = args.analysis
    if args.data:
        analysis_dir = str(Path(args.out) / "analysis")
        _run_analysis(args, analysis_dir)
    path = build_report(args.run_dir, args.out, eval_json_path=args.eval_json, analysis_dir=analysis_dir,
                        title=args.title)
    print(f"report written to {path}")


def cmd_gates(args: argparse.Namespace) -> None:
    from superpose.report.gate_view import show_gates

    if (args.text is None) == (args.text_file is None):
        raise SettingsError("give the text as --text TEXT or --text-file FILE (one of them)")
    text = args.text
    if args.text_file is not None:
        from superpose.data.text import load_texts

        text = load_texts(args.text_file)[0]  # a .txt file's first line, a .jsonl file's first record
    print(show_gates(args.run_dir, text, device=args.device, dtype=args.dtype))


def add_parsers(sub) -> None:
    """Add the `analyze`, `report` and `gates` subcommands to an argparse subparsers object."""
    p = sub.add_parser("analyze",
                       help="figures and statistics of hidden states, neurons and generations (the paper's analyses)",
                       description="Write one PNG per analysis and analysis.json (every number) to --out.")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--data", action="append", required=True, metavar="NAME=FILE",
                   help="text of one domain: 'base' and each expert's name (e.g. fr); .txt one doc per line or "
                        ".jsonl with 'text'; give one per stack")
    p.add_argument("--out", required=True, help="folder for the figures and analysis.json")
    _add_analysis_flags(p, "analysis settings")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="one self-contained HTML page: evaluation table, analysis figures, settings",
                       description="Write OUT/index.html; with --data and no --analysis, first analyse into "
                                   "OUT/analysis.")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--out", required=True, help="folder for index.html (and analysis/ when --data is given)")
    p.add_argument("--eval", dest="eval_json", metavar="EVAL_JSON", help="evaluation JSON to show as a table")
    p.add_argument("--analysis", metavar="DIR", help="folder written by `superpose analyze`")
    p.add_argument("--data", action="append", metavar="NAME=FILE",
                   help="analyse this domain's text first (as in `analyze`); repeat for 'base' and each expert")
    p.add_argument("--title", help="page title (default names the expert and the run folder)")
    _add_analysis_flags(p, "analysis settings (used with --data)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("gates",
                       help="each stack's blend weight at every token of a text (mean over layers, last layer)",
                       description="Print one row per token of --text with, per stack, its blend weight averaged "
                                   "over layers and at the last layer.")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--text", help="the text whose tokens' gate weights to show")
    p.add_argument("--text-file", help="or read it from this file: the first line of a .txt file, the first record "
                                       "of a .jsonl file (a README paragraph with code keeps its line breaks)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype the frozen stacks are loaded in (default float32)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_gates)
