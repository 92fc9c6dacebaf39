"""One-stack yardsticks on real text: replay and distillation, all weights and LoRA, against the
superposed teacher they come from and the causal mixtures.

Run through `python benchmarks/real_text.py --corpus ../shared/corpus --part one-stack [--stacks 2 3]`. Each row
trains one stack for the superposed rows' budget (steps x batch x block of the dynamic part) on an even mix of
the languages' `train.txt` files (each file capped at steps x batch / languages blocks, so one pass sees every
language alike), starting from the French expert as a user would:

* `replay`: `superpose distill RUN --teacher-weight 0` (plain fine-tuning on the mix; no teacher runs);
* `distill`: `superpose distill RUN --teacher-weight 1` (KL to the superposed model's next-token distributions);
* each with all weights and with `--lora 16` (merged into the weights).

The teacher is the dynamic part's labelled run of the same stacks (trained here at the same budget if missing).
Every row is scored like any model (`superpose eval RUN --model NAME=DIR`), so `stacks` says 1.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from dynamic_bench import GROUPS, LANGS
from halves import split_halves

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.data.text import load_texts
from superpose.demo.tiny_experts import finetune_expert
from superpose.evaluation.evaluate import evaluate, write_json
from superpose.model.superposed import SuperposedModel
from superpose.report.eval_tables import eval_table
from superpose.training.distill import DistillSettings, distill
from superpose.training.loop import train
from superpose.training.presets import preset_settings

ROWS = {  # label -> (teacher weight λ, LoRA rank)
    "replay, all weights": (0.0, None),
    "replay, LoRA r=16": (0.0, 16),
    "distill, all weights": (1.0, None),
    "distill, LoRA r=16": (1.0, 16),
}
BASELINES = ["bayes", "fixed_share:0.02", "fixed_share_mix", "oracle"]
START = "fr"
# distill's peak learning rates before the budget curve moved the all-weights default to 1e-3: rows measured
# before then pin them (and this table its switch rate, from before switched blocks), so a rerun reproduces them
EARLIER_LR = {"full": 5e-4, "lora": 2e-3}
SWITCH_RATE = 0.0
TEACHER = "superposed teacher (dynamic, labelled)"


def teacher_run(out: Path, experts_dir: Path, files: dict, names: list[str], steps: int, batch_size: int,
                block_size: int) -> Path:
    """The dynamic part's labelled run of these stacks; trained here with the same settings when missing."""
    run_dir = out / "dynamic" / "runs" / f"dynamic_{len(names) - 1}-experts_labelled"
    if (run_dir / "superposed.safetensors").is_file():
        return run_dir
    model_settings, train_settings = preset_settings("dynamic")
    train_settings = type(train_settings)(**{**train_settings.__dict__, "max_steps": steps, "batch_size": batch_size,
                                             "block_size": block_size, "seed": 0, "max_valid_blocks": 16,
                                             "device": "cpu"})
    torch.manual_seed(0)
    model = SuperposedModel.from_models(
        load_causal_lm(str(experts_dir / "base")), {n: load_causal_lm(str(experts_dir / n)) for n in names[1:]},
        model_settings, str(experts_dir / "base"), expert_paths={n: str(experts_dir / n) for n in names[1:]})
    train(model, load_tokenizer(str(experts_dir / "base")), files["train"], None, run_dir, train_settings)
    return run_dir


def run_one_stack(corpus: Path, out: Path, experts_dir: Path, recipe, steps: int, batch_size: int, block_size: int,
                  max_eval_blocks: int | None, stacks: list[int] = (2,), rows: dict = ROWS) -> None:
    """Train the rows for each group of stacks, score them with the teacher and the mixtures; one JSON per group."""
    if 3 in stacks and not (experts_dir / "de" / "config.json").is_file():
        finetune_expert(experts_dir / "base", load_texts(corpus / "de" / "train.txt"), experts_dir, recipe, "de")
    tokenizer = load_tokenizer(str(experts_dir / "base"))
    for count in stacks:
        started = time.perf_counter()
        names = GROUPS[count]
        files = split_halves(corpus, out / "dynamic" / "data", {n: LANGS[n] for n in names},
                             "mixed_" + "_".join(LANGS[n] for n in names))
        tick = time.perf_counter()
        run_dir = teacher_run(out, experts_dir, files, names, steps, batch_size, block_size)
        teacher_minutes = (time.perf_counter() - tick) / 60
        per_file = math.ceil(steps * batch_size / len(names))
        trained, records = {}, {}
        for label, (weight, lora) in rows.items():
            folder = out / "one_stack" / f"{count}-stacks" / label.replace(", ", "_").replace(" ", "-").replace("=", "")
            shutil.rmtree(folder, ignore_errors=True)
            settings = DistillSettings(start=START, lora=lora, teacher_weight=weight, max_steps=steps,
                                       switch_rate=SWITCH_RATE, lr=EARLIER_LR["full" if lora is None else "lora"],
                                       batch_size=batch_size, block_size=block_size, seed=0,
                                       max_train_blocks=per_file, device="cpu")
            tick = time.perf_counter()
            result = distill(run_dir, {f"{LANGS[n]}": files["train"][n] for n in names}, None, folder, settings)
            records[label] = {"minutes": (time.perf_counter() - tick) / 60, "history": result.history,
                              "tokens_per_second": result.throughput["tokens_per_second"], "folder": str(folder)}
            trained[label] = load_causal_lm(str(folder))
        teacher = SuperposedModel.from_pretrained(run_dir)
        tick = time.perf_counter()
        evaluated = evaluate(teacher, tokenizer, files["report"], baselines=BASELINES, select_data=None,
                             extra_models=trained, train_files=files["train"], block_size=block_size, batch_size=8,
                             max_blocks=max_eval_blocks)
        for key in ("models", "stacks_per_token", "throughput_tokens_per_s"):
            evaluated[key] = {(TEACHER if k == "superposed" else k): v for k, v in evaluated[key].items()}
        print(eval_table(evaluated))
        record = {"result": evaluated, "rows": records, "start": START, "names": names,
                  "budget": {"steps": steps, "batch_size": batch_size, "block_size": block_size,
                             "blocks_per_file": per_file},
                  "minutes": {"teacher (0 when reused)": teacher_minutes,
                              "evaluate": (time.perf_counter() - tick) / 60,
                              "total": (time.perf_counter() - started) / 60}}
        path = out / "one_stack" / f"one_stack_{count}.json"
        if path.is_file():  # rows trained by an earlier invocation (another --one-stack-rows) at the same budget stay
            earlier = json.loads(path.read_text())
            if earlier["budget"] == record["budget"]:
                for key in ("models", "stacks_per_token", "throughput_tokens_per_s"):
                    record["result"][key] = {**earlier["result"][key], **record["result"][key]}
                record["rows"] = {**earlier["rows"], **record["rows"]}
        write_json(record, path)


def markdown(out: Path, hardware: str) -> str | None:
    """The section for BENCHMARKS.md from the saved records (None when there is none)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "one_stack").glob("one_stack_*.json"))]
    if not records:
        return None
    lines = ["## One stack: replay and distillation", "",
             f"Produced by `python benchmarks/real_text.py --corpus ../shared/corpus --part one-stack` on {hardware}. "
             "Each one-stack row starts from the French expert and trains for the budget of the superposed rows "
             f"({records[0]['budget']['steps']} steps × batch {records[0]['budget']['batch_size']} × block "
             f"{records[0]['budget']['block_size']}) on an even mix of the languages' `train.txt` (at most "
             f"{records[0]['budget']['blocks_per_file']} blocks per file). `replay` is `superpose distill RUN "
             "--teacher-weight 0`, `distill` is `--teacher-weight 1` (KL to the superposed teacher, T = 1); LoRA rows "
             f"use `--lora 16`, merged; all with `--switch-rate {SWITCH_RATE:g}` and `--lr {EARLIER_LR['full']:g}` "
             f"(LoRA `{EARLIER_LR['lora']:g}`). Ratios are to the "
             "per-sequence oracle; the code-switched column is the "
             "perplexity on the mixed set built from the report halves.", ""]
    for record in records:
        result, names = record["result"], record["names"]
        oracle = result["models"].get("oracle", {})
        lines += [f"### {len(names)} stacks ({', '.join(names)})", "",
                  "| model | " + " | ".join(f"{n} PPL (× oracle)" for n in names) + " | code-switched PPL | stacks |",
                  "|---|" + "---|" * (len(names) + 2)]
        first = [TEACHER, "fixed_share_mix", "fixed_share:0.02", "bayes", *ROWS, "oracle"]
        for model in sorted(result["models"], key=lambda m: first.index(m) if m in first else len(first)):
            sets = result["models"][model]
            stacks = result["stacks_per_token"].get(model, float("nan"))
            cells = []
            for n in names:
                ppl, ref = sets[n]["ppl"], oracle.get(n, {}).get("ppl")
                cells.append(f"{ppl:.1f} ({ppl / ref:.3f})" if ref else f"{ppl:.1f}")
            switch = sets.get("switch", {}).get("ppl")
            model = model + (" †" if model in result.get("reads_answer", []) else "")
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {switch:.1f} | {stacks:g} |")
        lines += ["", "Training: " + "; ".join(f"{label}: {r['minutes']:.1f} min, {r['tokens_per_second']:.0f} tok/s"
                                                for label, r in record["rows"].items()), ""]
    return "\n".join(lines) + "\n"
