"""Real-text benchmark: English base + French fine-tune built from ../shared/corpus, superposed, compared.

    python benchmarks/real_text.py --corpus ../shared/corpus            # full run (< 40 min on 2 CPU cores)
    python benchmarks/real_text.py --corpus ../shared/corpus --quick    # CI-sized check, a few minutes

Sweeps are chosen on the first half of each valid.txt and the table reports the second half.
Writes benchmarks/out/ (experts, runs, eval.json) and, unless --no-write, BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from superpose.data import load_texts
from superpose.demo import demo_settings
from superpose.evaluation import eval_table, evaluate, write_json
from superpose.experts import ExpertRecipe, build_experts
from superpose.export import export_hard_merge
from superpose.loading import load_causal_lm, load_tokenizer
from superpose.modeling import SuperposedModel
from superpose.settings import ModelSettings, TrainSettings
from superpose.tables import format_table
from superpose.training import train

ROOT = Path(__file__).resolve().parent.parent

FULL = dict(
    recipe=ExpertRecipe(n_layer=4, n_embd=128, n_head=4, block_size=128, vocab_size=4096, base_steps=1000,
                        finetune_steps=400, batch_size=16, seed=0),
    train_steps=400, batch_size=16, block_size=128, max_eval_blocks=None,
)
QUICK = dict(
    recipe=ExpertRecipe(n_layer=2, n_embd=64, n_head=2, block_size=64, vocab_size=1024, base_steps=60,
                        finetune_steps=30, batch_size=8, seed=0),
    train_steps=20, batch_size=8, block_size=64, max_eval_blocks=24,
)
# (label, model settings, training graph): ours (1d, 2d) and the paper-faithful reproduction
VARIANTS = [
    ("superposed-1d", ModelSettings(variant="1d"), "sequential"),
    ("superposed-2d", ModelSettings(variant="2d"), "sequential"),
    ("repro-1d (symmetric conv, parallel graph)", ModelSettings(variant="1d", conv_padding="symmetric"), "parallel"),
    ("superposed-1d-demo (last-layer AE, expert head)", None, "sequential"),  # the demo's settings, see demo.py
]
LEARNING_RATES = dict(lr_alpha=2e-3, lr_ae=1e-3)  # the paper's rates are for 10 epochs; we have a few hundred steps


def split_halves(corpus: Path, out: Path) -> dict[str, dict[str, str]]:
    """valid.txt -> select (first half of the lines) and report (second half)."""
    files: dict[str, dict[str, str]] = {"train": {}, "select": {}, "report": {}}
    out.mkdir(parents=True, exist_ok=True)
    for lang, domain in (("en", "base"), ("fr", "fr")):
        lines = load_texts(corpus / lang / "valid.txt")
        half = len(lines) // 2
        for split, chunk in (("select", lines[:half]), ("report", lines[half:])):
            path = out / f"{lang}_{split}.txt"
            path.write_text("\n".join(chunk) + "\n", encoding="utf-8")
            files[split][domain] = str(path)
        files["train"][domain] = str(corpus / lang / "train.txt")
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"), help="folder with en/ and fr/ train/valid.txt")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="work folder")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps: a few minutes")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine more threads spin and run slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out) / ("quick" if args.quick else "full")
    if not (corpus / "en" / "train.txt").is_file():
        print(f"corpus not found under {corpus} (needs en/ and fr/ train.txt, valid.txt)", file=sys.stderr)
        return 2
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    timings: dict[str, float] = {}
    files = split_halves(corpus, out / "data")

    tick = time.perf_counter()
    experts_dir = out / "experts"
    recipe = config["recipe"]
    if not (experts_dir / "recipe.json").is_file() or json.loads((experts_dir / "recipe.json").read_text())["recipe"] != asdict(recipe):
        build_experts(load_texts(files["train"]["base"]), load_texts(files["train"]["fr"]), experts_dir, recipe, "fr")
    timings["build experts"] = time.perf_counter() - tick

    base = load_causal_lm(str(experts_dir / "base"))
    expert = load_causal_lm(str(experts_dir / "fr"))
    tokenizer = load_tokenizer(str(experts_dir / "base"))
    runs: dict[str, SuperposedModel] = {}
    histories = {}
    for label, settings, graph in VARIANTS:
        tick = time.perf_counter()
        settings = settings or demo_settings("1d", base.config.num_hidden_layers)
        model = SuperposedModel.from_models(base, expert, settings, str(experts_dir / "base"), "fr", str(experts_dir / "fr"))
        run_dir = out / "runs" / label.split(" ")[0]
        train_settings = TrainSettings(epochs=1, max_steps=config["train_steps"], batch_size=config["batch_size"],
                                       block_size=config["block_size"], training_graph=graph, seed=0,
                                       max_valid_blocks=16, **LEARNING_RATES)
        if run_dir.exists():
            import shutil
            shutil.rmtree(run_dir)
        result = train(model, tokenizer, files["train"], files["select"], run_dir, train_settings)
        histories[label] = result.history
        runs[label] = model.eval()
        timings[f"train {label}"] = time.perf_counter() - tick

    tick = time.perf_counter()
    main_label = VARIANTS[0][0]
    hard_dir = export_hard_merge(runs[main_label], out / "hard_merge", tokenizer)
    result = evaluate(
        runs[main_label], tokenizer, files["report"], baselines=None, select_data=files["select"],
        extra_models={"hard-merge (1d alpha)": load_causal_lm(str(hard_dir))},
        other_runs={k: v for k, v in runs.items() if k != main_label}, train_files=files["train"],
        block_size=config["block_size"], batch_size=8, max_blocks=config["max_eval_blocks"],
    )
    result["models"] = {(main_label if k == "superposed" else k): v for k, v in result["models"].items()}
    result["throughput_tokens_per_s"] = {(main_label if k == "superposed" else k): v
                                        for k, v in result["throughput_tokens_per_s"].items()}
    timings["evaluate"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    result["timings_s"] = timings
    result["training_history"] = histories
    write_json(result, out / "eval.json")
    table = eval_table(result)
    print(table)
    print(format_table(["step", "seconds"], [[k, round(v, 1)] for k, v in timings.items()]))
    if not args.no_write and not args.quick:
        write_markdown(result, experts_dir, ROOT / "BENCHMARKS.md")
    return 0


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPU cores, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def write_markdown(result: dict, experts_dir: Path, path: Path) -> None:
    recipe = json.loads((experts_dir / "recipe.json").read_text())
    domains = result["domains"]
    throughput = result["throughput_tokens_per_s"]
    base_tps = throughput["base"]
    best = set(result["best"].values())
    rows = []
    for name, per_domain in result["models"].items():
        rows.append("| " + " | ".join([
            name + (" ★" if name in best else ""),
            *[f"{per_domain[d]['ppl']:.2f}" for d in domains],
            *[f"{per_domain[d]['accuracy']:.3f}" for d in domains],
            f"{math.exp(sum(math.log(per_domain[d]['ppl']) for d in domains) / len(domains)):.2f}",
            *[f"{per_domain[d].get('js_mixture', float('nan')):.3f}" for d in domains],
            f"{throughput[name]:.0f}", f"{throughput[name] / base_tps:.2f}",
        ]) + " |")
    header = ("| model | " + " | ".join(f"{'English' if d == 'base' else 'French'} PPL" for d in domains) + " | "
              + " | ".join(f"{'English' if d == 'base' else 'French'} acc" for d in domains)
              + " | geo-mean PPL | " + " | ".join(f"JSD to mixture ({d})" for d in domains)
              + " | eval tokens/s | × base |")
    sep = "|" + "---|" * (header.count("|") - 1)
    timings = "\n".join(f"| {k} | {v / 60:.1f} min |" for k, v in result["timings_s"].items())
    selection = "\n".join(f"* `{m}`: chose `{p}` (geometric-mean PPL on the selection half: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in result["selection_geomean_ppl"][m].items()) + ")"
                          for m, p in result["best"].items())
    train_lines = []
    for label, history in result["training_history"].items():
        last = history[-1]
        graph_ppl = math.exp(last["valid_lm"]) if "valid_lm" in last else float("nan")
        train_lines.append(f"| {label} | {last['step']} | {last['train_loss']:.3f} | {graph_ppl:.1f} | "
                           f"{last.get('valid_ppl_base', float('nan')):.1f} | {last.get('valid_ppl_fr', float('nan')):.1f} |")
    text = BENCHMARK_TEMPLATE.format(
        hardware=_hardware(), recipe=json.dumps(recipe["recipe"]), params=recipe["n_params"],
        expert_train=json.dumps(recipe["train"]), header=header, sep=sep, rows="\n".join(rows),
        tokens=", ".join(f"{d}: {result['models']['base'][d]['tokens']}" for d in domains),
        selection=selection, timings=timings, train_rows="\n".join(train_lines),
    )
    # The hand-written reading of the numbers (and the speed table) below the marker survive a rerun.
    if path.is_file() and MARKER in path.read_text(encoding="utf-8"):
        text += "\n" + MARKER + path.read_text(encoding="utf-8").split(MARKER, 1)[1]
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}; revise the hand-written part below '{MARKER.strip()}' if the numbers moved")


MARKER = "<!-- hand-written below: keep in step with the tables above -->\n"
BENCHMARK_TEMPLATE = """# Benchmarks

## Real text: English base, French fine-tune (ELTeC novels)

Produced by `python benchmarks/real_text.py --corpus ../shared/corpus` (also `make benchmark`), which
rewrites this file. Hardware: {hardware}.

* **Data**: `../shared/corpus` (public-domain English and French novels, one paragraph per line).
  Experts train on `en/train.txt` and `fr/train.txt`. Each `valid.txt` is split by lines: the first
  half chooses each sweep's best point (★) and validates training, the second half is what the table reports.
* **Experts** (built by `superpose.experts.build_experts`): byte-level BPE on both languages, a GPT-2-shaped base
  ({params} parameters) trained on English, then fine-tuned on French. Recipe: `{recipe}`;
  training: `{expert_train}`.
* **Superposed models**: trained with `superpose.training.train` on both training files for a few hundred steps
  (batch 16, block 128, lr_alpha 2e-3, lr_ae 1e-3; other settings the paper's, except the `-demo` run, which uses
  the demo's blend: one autoencoder after the last layer and the expert's final norm + head, see `superpose/demo.py`). The equivalent CLI is
  `superpose train --base out/experts/base --expert fr=out/experts/fr --train base=../shared/corpus/en/train.txt
  --train fr=../shared/corpus/fr/train.txt --valid base=en_select.txt --valid fr=fr_select.txt --max-steps 400
  --batch-size 16 --block-size 128 --lr-alpha 2e-3 --lr-ae 1e-3 [--variant 2d] [--conv-padding symmetric --training-graph parallel]`,
  and the table is `superpose eval RUN --data base=en_report.txt --data fr=fr_report.txt --select base=en_select.txt --select fr=fr_select.txt`.
* **Metrics**: token-weighted perplexity and next-token accuracy over every token of the report half
  (tokens scored: {tokens}); JSD (nats, per token) to the experts' averaged distribution; evaluation throughput in
  tokens/s on this CPU, next to the base model's (ensemble, router and oracle are charged the expert runs they use).

{header}
{sep}
{rows}

Sweep selection (on the selection half, never on the reported half):
{selection}

Training, last step (the `graph PPL` column is the perplexity of the graph each run was trained in, on the
selection half, both languages together; the reproduction's parallel graph with symmetric convolutions reads the
next token, so its training-graph number is not an honest perplexity):

| run | steps | train loss | graph PPL | served English PPL | served French PPL |
|---|---|---|---|---|---|
{train_rows}

Wall time:

| step | time |
|---|---|
{timings}
"""


if __name__ == "__main__":
    sys.exit(main())
