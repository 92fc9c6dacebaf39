"""Real-text benchmark: English base + French fine-tune built from ../shared/corpus, superposed, compared.

    python benchmarks/real_text.py --corpus ../shared/corpus            # full run (paper part + dynamic part)
    python benchmarks/real_text.py --corpus ../shared/corpus --part dynamic   # 2/3 experts, dynamic preset only
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
from dataclasses import asdict, replace
from pathlib import Path

import torch
from dynamic_bench import collect, markdown, run_dynamic
from halves import MIXED_LINES, split_halves
from sections import write_section

from superpose.compare.hard_merge import export_hard_merge
from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.core.text_tables import format_table
from superpose.data.text import load_texts
from superpose.demo.tiny_experts import ExpertRecipe, build_experts
from superpose.demo.walkthrough import demo_settings
from superpose.evaluation.evaluate import evaluate, write_json
from superpose.model.superposed import SuperposedModel
from superpose.report.eval_tables import eval_table
from superpose.training.loop import train
from superpose.training.presets import preset_settings

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
PAPER_MODEL, PAPER_TRAIN = preset_settings("paper")
# (label, model settings, training graph): ours (1d, 2d) and the paper-faithful reproduction
VARIANTS = [
    ("superposed-1d", replace(PAPER_MODEL, variant="1d"), "sequential"),
    ("superposed-2d", replace(PAPER_MODEL, variant="2d"), "sequential"),
    ("repro-1d (symmetric conv, parallel graph)", replace(PAPER_MODEL, variant="1d", conv_padding="symmetric"),
     "parallel"),
    ("superposed-1d-demo (last-layer AE, expert head)", None, "sequential"),  # the demo's settings, see demo.py
]
LEARNING_RATES = dict(lr_blend=2e-3, lr_ae=1e-3)  # the paper's rates are for 10 epochs; we have a few hundred steps


def _clear_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux), so the peak while evaluating can be read afterwards."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _group(text: str) -> int | str:
    """A `--stacks` value: 0, 2, 3, code2 or code3."""
    if text in ("code2", "code3"):
        return text
    if text in ("0", "2", "3"):
        return int(text)
    raise argparse.ArgumentTypeError(f"choose from 0, 2, 3, code2, code3; got {text!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"),
                        help="folder with en/ and fr/ train/valid.txt")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="work folder")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps: a few minutes")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--part", choices=["all", "paper", "dynamic", "one-stack"], default="all",
                        help="paper: the static blends vs baselines; dynamic: the dynamic preset with 2 and 3 experts; "
                             "one-stack: replay and distillation rows, not part of `all`")
    parser.add_argument("--stacks", type=_group, nargs="+", default=[2, 3, "code2", "code3"],
                        help="dynamic part: which groups to train (2: base + fr, 3: + de, code2: base + code, code3: "
                             "base + fr + code); 0: only rewrite BENCHMARKS.md from the groups' saved records")
    parser.add_argument("--rescore", action="store_true",
                        help="dynamic part: score the groups' saved runs with the current evaluation-time settings "
                             "(output temperatures) instead of training them again")
    parser.add_argument("--one-stack-rows", default="all",
                        help="one-stack part: comma-separated rows to train (replay-all, replay-lora, distill-all, "
                             "distill-lora) or all; rows of an earlier invocation at the same budget are kept")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine more threads spin and run slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out) / ("quick" if args.quick else "full")
    if not (corpus / "en" / "train.txt").is_file():
        print(f"corpus not found under {corpus} (needs en/ and fr/ train.txt, valid.txt)", file=sys.stderr)
        return 2
    config = QUICK if args.quick else FULL
    if args.part in ("all", "dynamic") and not (corpus / "de" / "train.txt").is_file():
        print(f"the dynamic part needs {corpus / 'de'} (German train/valid.txt)", file=sys.stderr)
        return 2
    if args.part == "one-stack":
        return run_one_stack_part(args, corpus, out, config)
    if args.part in ("all", "paper"):
        run_paper(args, corpus, out, config)
    if args.part in ("all", "dynamic"):
        experts_dir = out / "experts"
        if not (experts_dir / "recipe.json").is_file():
            print("the dynamic part uses the paper part's experts: run --part paper first", file=sys.stderr)
            return 2
        if args.stacks != [0]:
            run_dynamic(corpus, out / "dynamic", experts_dir, config["recipe"], config["train_steps"],
                        config["batch_size"], config["block_size"], config["max_eval_blocks"], args.stacks,
                        rescore=args.rescore)
        record = collect(out / "dynamic")
        if record is not None and not args.no_write and not args.quick:
            write_section(ROOT / "BENCHMARKS.md", "dynamic part", markdown(record, _hardware()), top=True)
    return 0




def run_one_stack_part(args, corpus: Path, out: Path, config: dict) -> int:
    """Replay and distillation rows (benchmarks/one_stack.py); builds the experts and the teacher runs it lacks."""
    from one_stack import markdown as one_stack_markdown
    from one_stack import run_one_stack

    experts_dir = out / "experts"
    if not (experts_dir / "recipe.json").is_file():
        files = split_halves(corpus, out / "data")
        build_experts(load_texts(files["train"]["base"]), load_texts(files["train"]["fr"]), experts_dir,
                      config["recipe"], "fr")
    if args.stacks != [0]:
        from one_stack import ROWS

        keys = dict(zip(["replay-all", "replay-lora", "distill-all", "distill-lora"], ROWS))
        wanted = list(keys) if args.one_stack_rows == "all" else [r.strip() for r in args.one_stack_rows.split(",")]
        unknown = [r for r in wanted if r not in keys]
        if unknown:
            print(f"unknown --one-stack-rows {unknown}; known: {', '.join(keys)}", file=sys.stderr)
            return 2
        run_one_stack(corpus, out, experts_dir, config["recipe"], config["train_steps"], config["batch_size"],
                      config["block_size"], config["max_eval_blocks"], [s for s in args.stacks if s in (2, 3)],
                      {keys[r]: ROWS[keys[r]] for r in wanted})
    section = one_stack_markdown(out, _hardware())
    if section is not None and not args.no_write and not args.quick:
        write_section(ROOT / "BENCHMARKS.md", "one-stack part", section)
    elif section is not None:
        print(section)
    return 0


def run_paper(args, corpus: Path, out: Path, config: dict) -> None:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    files = split_halves(corpus, out / "data")

    tick = time.perf_counter()
    experts_dir = out / "experts"
    recipe = config["recipe"]
    if (not (experts_dir / "recipe.json").is_file()
            or json.loads((experts_dir / "recipe.json").read_text())["recipe"] != asdict(recipe)):
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
        model = SuperposedModel.from_models(base, expert, settings, str(experts_dir / "base"), "fr",
                                            str(experts_dir / "fr"))
        run_dir = out / "runs" / label.split(" ")[0]
        train_settings = replace(PAPER_TRAIN, epochs=1, max_steps=config["train_steps"],
                                 batch_size=config["batch_size"], block_size=config["block_size"],
                                 training_graph=graph, seed=0, max_valid_blocks=16, **LEARNING_RATES)
        if run_dir.exists():
            import shutil
            shutil.rmtree(run_dir)
        languages = {k: v for k, v in files["select"].items() if k != "switch"}  # training validates per language
        result = train(model, tokenizer, files["train"], languages, run_dir, train_settings)
        histories[label] = result.history
        runs[label] = model.eval()
        timings[f"train {label}"] = time.perf_counter() - tick

    tick = time.perf_counter()
    main_label = VARIANTS[0][0]
    cleared = _clear_peak_rss()
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
    if cleared:
        result["eval_peak_rss_mb"] = _peak_rss_mb()
    result["model_mb"] = sum(p.numel() * p.element_size() for p in base.parameters()) / 2**20
    result["stacks_per_token"] = {(main_label if k == "superposed" else k): v
                                  for k, v in result["stacks_per_token"].items()}
    timings["total"] = time.perf_counter() - started
    result["timings_s"] = timings
    result["training_history"] = histories
    write_json(result, out / "eval.json")
    table = eval_table(result)
    print(table)
    print(format_table(["step", "seconds"], [[k, round(v, 1)] for k, v in timings.items()]))
    if not args.no_write and not args.quick:
        write_markdown(result, experts_dir, ROOT / "BENCHMARKS.md")


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


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_markdown(result: dict, experts_dir: Path, path: Path) -> None:
    recipe = json.loads((experts_dir / "recipe.json").read_text())
    throughput = result["throughput_tokens_per_s"]
    base_tps = throughput["base"]
    best = set(result["best"].values())
    bounds = set(result.get("reads_answer", []))
    compute = result.get("stacks_per_token", {})
    rows = []
    for name, sets in result["models"].items():
        en, fr, mixed = sets["base"], sets["fr"], sets["switch"]
        rows.append("| " + " | ".join([
            name + (" ★" if name in best else "") + (" †" if name in bounds else ""),
            _fmt(en["ppl"]), _fmt(fr["ppl"]), _fmt(math.sqrt(en["ppl"] * fr["ppl"])),
            _fmt(mixed["ppl"]), _fmt(mixed.get("ppl_source:base")), _fmt(mixed.get("ppl_source:fr")),
            _fmt(mixed.get("ppl_after_switch")), _fmt(mixed.get("own_weight_share"), 3),
            _fmt(compute.get(name), 0), f"{throughput[name]:.0f}", f"{throughput[name] / base_tps:.2f}",
        ]) + " |")
    timings = "\n".join(f"| {k} | {v / 60:.1f} min |" for k, v in result["timings_s"].items())
    selection = "\n".join(f"* `{m}`: chose `{p}` (geometric-mean PPL over the selection sets: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in result["selection_geomean_ppl"][m].items()) + ")"
                          for m, p in result["best"].items())
    train_lines = []
    for label, history in result["training_history"].items():
        last = history[-1]
        graph_ppl = math.exp(last["valid_lm"]) if "valid_lm" in last else float("nan")
        train_lines.append(f"| {label} | {last['step']} | {last['train_loss']:.3f} | {graph_ppl:.1f} | "
                           f"{last.get('valid_ppl_base', float('nan')):.1f} | "
                           f"{last.get('valid_ppl_fr', float('nan')):.1f} |")
    tokens = result["models"]["base"]
    text = BENCHMARK_TEMPLATE.format(
        hardware=_hardware(), recipe=json.dumps(recipe["recipe"]), params=recipe["n_params"],
        expert_train=json.dumps(recipe["train"]), rows="\n".join(rows),
        tokens=", ".join(f"{d}: {tokens[d]['tokens']}" for d in result["domains"]),
        mixed_lines=MIXED_LINES, selection=selection, timings=timings, train_rows="\n".join(train_lines),
        eval_rss=_fmt(result.get("eval_peak_rss_mb"), 0), model_mb=_fmt(result.get("model_mb"), 1),
    )
    write_section(path, "real-text part", text)


BENCHMARK_TEMPLATE = """## Real text: English base, French fine-tune (ELTeC novels)

Produced by `python benchmarks/real_text.py --corpus ../shared/corpus` (also `make benchmark`), which
rewrites this section. Hardware: {hardware}.

* **Data**: `../shared/corpus` (public-domain English and French novels, one paragraph per line).
  Experts train on `en/train.txt` and `fr/train.txt`. Each `valid.txt` is split by lines: the first
  half chooses each sweep's best point (★) and validates training, the second half is what the table reports.
  The code-switched set (`switch`) holds {mixed_lines} lines built from the report halves with
  `superpose mix-data --data base=en_report.txt --data fr=fr_report.txt --out mixed_report.jsonl --seed 0
  --max-lines {mixed_lines}` (sentences alternating between English and French inside each line, 2-6 per line);
  the selection half gets its own mixed set the same way.
* **Experts** (built by `superpose.demo.tiny_experts.build_experts`): byte-level BPE on both languages, \
a GPT-2-shaped base
  ({params} parameters) trained on English, then fine-tuned on French. Recipe: `{recipe}`;
  training: `{expert_train}`.
* **Superposed models**: trained with `superpose.training.loop.train` on both training files, 400 steps of batch 16 ×
  block 128 each (the same budget for every trained row), lr_blend 2e-3, lr_ae 1e-3; other settings the paper's,
  except the `-demo` run, which uses the demo's blend: one autoencoder after the last layer and the expert's final
  norm + head, see `superpose/demo.py`. The equivalent CLI is
  `superpose train --base out/experts/base --expert fr=out/experts/fr --train base=../shared/corpus/en/train.txt
  --train fr=../shared/corpus/fr/train.txt --valid base=en_select.txt --valid fr=fr_select.txt --max-steps 400
  --batch-size 16 --block-size 128 --lr-alpha 2e-3 --lr-ae 1e-3 [--variant 2d] \
[--conv-padding symmetric --training-graph parallel]`,
  and the table is `superpose eval RUN --data base=en_report.txt --data fr=fr_report.txt \
--data switch=mixed_report.jsonl
  --select base=en_select.txt --select fr=fr_select.txt --select switch=mixed_select.jsonl`.
* **Metrics**: token-weighted perplexity over every token of the report half (tokens scored: {tokens}). On the
  code-switched set: the whole set, English and French tokens inside mixed lines, and the first 8 tokens after
  each switch; "own weight" is the share of tokens whose heaviest per-token weight is on the sentence's own
  language's model (only methods with per-token weights have one). `stacks` is the number of model stacks run
  per token (the compute); evaluation throughput is tokens/s on this CPU next to the base model's.
* **Bounds (†)** read the tokens they score and are no usable model: `oracle` (per sequence: the labelled
  language's expert; on the unlabelled code-switched set, the best single model per block in hindsight),
  `oracle_token` (per token, the model that gave the observed token the highest probability) and
  `router_lookahead` (a classifier that reads the whole block before choosing). The causal `router` decides from
  each prefix; switching stacks mid-sequence needs every stack's cache, so it is charged every stack.
* **Memory**: peak resident memory of this process while it evaluated (the peak counter is reset just before
  `evaluate`; the process also holds the trained runs and the experts): {eval_rss} MB; one model's weights are
  {model_mb} MB.

| model | English PPL | French PPL | geo-mean | code-switched PPL | English in mixed | French in mixed | \
first 8 after switch | own weight | stacks | eval tok/s | × base |
|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Sweep selection (on the selection sets, never on the reported ones):
{selection}

Training, last step (the `graph PPL` column is the token-weighted perplexity of the graph each run was trained
in, on the selection half, both languages together; the reproduction's parallel graph with symmetric
convolutions reads the next token, so its training-graph number is not an honest perplexity):

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
