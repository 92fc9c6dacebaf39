"""Dynamic superposition on real text: 2 and 3 experts, labelled and label-free, against the causal mixtures.

Run through `python benchmarks/real_text.py --corpus ../shared/corpus --part dynamic`; `python
benchmarks/dynamic_bench.py` re-measures the saved runs' cached generation speed. Uses the experts of
the paper part (English base, French fine-tune) plus a German fine-tune of the same base built with
`superpose.demo.tiny_experts.finetune_expert` on `de/train.txt` with the same recipe.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path

import torch
from halves import docs_halves, split_halves

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.data.text import load_texts
from superpose.demo.tiny_experts import ExpertRecipe, finetune_expert
from superpose.evaluation.evaluate import evaluate, write_json
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel
from superpose.report.eval_tables import eval_table
from superpose.training.loop import UNLABELLED, train
from superpose.training.presets import preset_settings

LANGS = {"base": "en", "fr": "fr", "de": "de", "code": "code"}  # expert name -> corpus folder
BASELINES = ["linear:0.3,0.5,0.7", "ensemble:0.5", "bayes", "fixed_share:0.005,0.02,0.1", "fixed_share_mix", "router",
             "oracle", "oracle_token"]
YARDSTICK = "fixed_share_mix"  # the training-free mixture every trained row is measured against
def _generation_speed(models: dict[str, torch.nn.Module], vocab: int, new_tokens: int = 64, repeats: int = 3) -> dict:
    """Cached greedy generation tokens/s, batch 1, the same 16-token prompt for every model (best of `repeats`)."""
    prompt = torch.randint(5, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    speed = {}
    for model in models.values():  # the quick models hold 64 positions: prompt + new tokens must fit
        limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
        new_tokens = min(new_tokens, limit - prompt.shape[1]) if limit else new_tokens
    for name, model in models.items():
        best = math.inf
        for _ in range(repeats):
            tick = time.perf_counter()
            with torch.no_grad():
                model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
            best = min(best, time.perf_counter() - tick)
        speed[name] = new_tokens / best
    return speed


GROUPS = {2: ["base", "fr"], 3: ["base", "fr", "de"]}
# skills beyond languages: an English base with a code fine-tune (and the French one); scored on docs too
CODE_GROUPS = {"code2": ["base", "code"], "code3": ["base", "fr", "code"]}
ALL_GROUPS = {**GROUPS, **CODE_GROUPS}


def ensure_expert(corpus: Path, experts_dir: Path, recipe: ExpertRecipe, name: str) -> None:
    """Fine-tune the base into expert `name` on its corpus folder's train file with the French recipe, once."""
    if not (experts_dir / name / "config.json").is_file():
        train_file = next(p for p in (corpus / LANGS[name] / "train.txt", corpus / LANGS[name] / "train.jsonl")
                          if p.is_file())
        finetune_expert(experts_dir / "base", load_texts(train_file), experts_dir, recipe, name)


def group_files(corpus: Path, data_dir: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """The group's halves and code-switched sets; a group with the code expert also gets the READMEs (`docs`)."""
    files = split_halves(corpus, data_dir, {n: LANGS[n] for n in names}, "mixed_" + "_".join(LANGS[n] for n in names))
    if "code" in names:
        docs_halves(corpus, data_dir, files)
    return files


def rescored(run_dir: Path) -> SuperposedModel:
    """A saved run with the current default output temperatures. They act in evaluation mode only, so training
    with them gives the same weights: the saved run is the run the current code trains."""
    model = SuperposedModel.from_pretrained(run_dir)
    model.settings.output_temperatures = list(ModelSettings().output_temperatures)
    model.config.settings = {**model.config.settings, "output_temperatures": model.settings.output_temperatures}
    return model


def run_dynamic(corpus: Path, out: Path, experts_dir: Path, recipe: ExpertRecipe, steps: int, batch_size: int,
                block_size: int, max_eval_blocks: int | None, stacks: list[int] = (2, 3),
                rescore: bool = False) -> None:
    """Train and evaluate each group of stacks (a key of `ALL_GROUPS`); each group's record goes to
    `out/dynamic_<group>.json` (groups may run as separate processes; `collect` joins them). `rescore`: evaluate
    the group's saved runs (`rescored`) instead of training them, keeping their training records."""
    for count in stacks:
        for name in ALL_GROUPS[count][1:]:
            ensure_expert(corpus, experts_dir, recipe, name)
    tokenizer = load_tokenizer(str(experts_dir / "base"))
    for count in stacks:
        started = time.perf_counter()
        results, histories, throughput = {}, {}, {}
        names = ALL_GROUPS[count]
        files = group_files(corpus, out / "data", names)
        tag = f"{len(names) - 1} experts" + (f" ({' + '.join(names)})" if count in CODE_GROUPS else "")
        runs = {}
        saved = json.loads((out / f"dynamic_{count}.json").read_text()) if rescore else None
        for labelled in (True, False):
            label = f"dynamic, {tag.split(' (')[0]}{', code' if count in CODE_GROUPS else ''}, " \
                    f"{'labelled' if labelled else 'label-free'}"
            model_settings, train_settings = preset_settings("dynamic")
            train_settings = type(train_settings)(**{**train_settings.__dict__, "max_steps": steps,
                                                     "batch_size": batch_size, "block_size": block_size, "seed": 0,
                                                     "max_valid_blocks": 16, "device": "cpu"})
            base = load_causal_lm(str(experts_dir / "base"))
            experts = {n: load_causal_lm(str(experts_dir / n)) for n in names[1:]}
            torch.manual_seed(0)
            model = SuperposedModel.from_models(base, experts, model_settings, str(experts_dir / "base"),
                                                expert_paths={n: str(experts_dir / n) for n in names[1:]})
            train_files = files["train"] if labelled else {
                (UNLABELLED if i == 0 else f"{UNLABELLED}:{i + 1}"): path
                for i, path in enumerate(files["train"].values())}
            run_dir = out / "runs" / label.replace(", ", "_").replace(" ", "-")
            if saved is not None:
                runs[label] = rescored(run_dir)
                histories[label] = saved["training_history"][label]
                throughput[label] = saved["training_tokens_per_s"][label]
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            result = train(model, tokenizer, train_files, None, run_dir, train_settings)
            histories[label] = result.history
            throughput[label] = result.throughput["tokens_per_second"]
            runs[label] = model.eval()
        main, other = list(runs)
        evaluated = evaluate(runs[main], tokenizer, files["report"], baselines=BASELINES, select_data=files["select"],
                             other_runs={other: runs[other]}, train_files=files["train"], block_size=block_size,
                             batch_size=8, max_blocks=max_eval_blocks)
        evaluated["models"] = {(main if k == "superposed" else k): v for k, v in evaluated["models"].items()}
        for key in ("throughput_tokens_per_s", "stacks_per_token"):
            evaluated[key] = {(main if k == "superposed" else k): v for k, v in evaluated[key].items()}
        print(eval_table(evaluated))
        base_model = load_causal_lm(str(experts_dir / "base")).eval()
        evaluated["generation_tokens_per_s"] = _generation_speed({"base": base_model, **runs}, tokenizer.vocab_size)
        results[tag] = evaluated
        record = {"results": results, "training_history": histories, "training_tokens_per_s": throughput,
                  "budget": {"steps": steps, "batch_size": batch_size, "block_size": block_size},
                  "minutes": (time.perf_counter() - started) / 60 + (saved["minutes"] if saved else 0)}
        if saved is not None:
            record["rescored"] = True
        write_json(record, out / f"dynamic_{count}.json")


def collect(out: Path) -> dict | None:
    """Join the groups' records (None when there is none)."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("dynamic_*.json"))]
    if not records:
        return None
    joined = {"results": {}, "training_history": {}, "training_tokens_per_s": {}, "budget": records[0]["budget"],
              "minutes": sum(r["minutes"] for r in records)}
    for record in records:
        if record["budget"] != joined["budget"]:
            raise ValueError(f"the groups' records under {out} used different budgets; rerun them")
        for key in ("results", "training_history", "training_tokens_per_s"):
            joined[key].update(record[key])
        joined["rescored"] = joined.get("rescored", False) or record.get("rescored", False)
    return joined


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(record: dict, hardware: str) -> str:
    """The dynamic section of BENCHMARKS.md: one table per group of stacks, each set's perplexity with its ratio
    to the per-sequence oracle (labelled sets) and to the training-free rate mixture, and the cost."""
    budget = record["budget"]
    parts = [DYNAMIC_HEADER.format(hardware=hardware, minutes=record["minutes"], **budget)
             + (RESCORED_NOTE if record.get("rescored") else "")]
    for tag, result in record["results"].items():
        stack_names = [n for n in result["domains"] if n in result["models"]["oracle"] and n not in ("switch", "docs")]
        labelled = [n for n in stack_names if result.get("labels", {}).get(n, n) is not None]
        extra = [n for n in result["domains"] if n not in labelled and n != "switch"]
        oracle, yardstick = result["models"]["oracle"], result["models"].get(YARDSTICK)
        best = set(result["best"].values())
        bounds = set(result.get("reads_answer", []))
        compute = result["stacks_per_token"]
        header = ["model", *[f"{n} PPL (× oracle, × mix)" for n in labelled],
                  *[f"{n} PPL (× mix)" for n in extra], "code-switched PPL (× mix)", "after switch", "stacks"]
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

        def to_mix(sets: dict, n: str, key: str = "ppl") -> str:
            value = sets[n].get(key)
            if yardstick is None or value is None:
                return _fmt(value)
            return f"{_fmt(value)} ({value / yardstick[n][key]:.3f})"

        for name, sets in result["models"].items():
            if name.startswith(("linear", "fixed_share:", "ensemble")) and name not in best:
                continue
            cells = [f"{_fmt(sets[n]['ppl'])} ({sets[n]['ppl'] / oracle[n]['ppl']:.3f}, "
                     f"{sets[n]['ppl'] / yardstick[n]['ppl']:.3f})" if yardstick else
                     f"{_fmt(sets[n]['ppl'])} ({sets[n]['ppl'] / oracle[n]['ppl']:.3f})" for n in labelled]
            rows.append("| " + " | ".join([
                name + (" ★" if name in best else "") + (" †" if name in bounds else ""), *cells,
                *[to_mix(sets, n) for n in extra], to_mix(sets, "switch"),
                _fmt(sets["switch"].get("ppl_after_switch")), _fmt(compute.get(name), 0)]) + " |")
        speed = result["generation_tokens_per_s"]
        stacks = len(stack_names)
        speed_line = ", ".join(f"{k}: {v:.0f} tok/s ({v / speed['base']:.2f}× base; goal ≥ {0.9 / stacks:.2f})"
                               if k != "base" else f"base: {v:.0f} tok/s" for k, v in speed.items())
        parts.append(f"### {tag} (M = {stacks} stacks)\n\n" + "\n".join(rows) + f"\n\nCached greedy generation "
                     f"(batch 1, 16-token prompt, 64 new tokens, best of 3): {speed_line}.\n")
    parts.append("Training tokens/s: " + ", ".join(f"{k}: {v:.0f}" for k, v in record["training_tokens_per_s"].items())
                 + ".\n")
    return "\n".join(parts).replace("1 experts", "1 expert")


DYNAMIC_HEADER = """## Dynamic superposition (`--preset dynamic`): languages and code, labelled and label-free

Produced by `python benchmarks/real_text.py --corpus ../shared/corpus --part dynamic --stacks 2 3 code2 code3`
({minutes:.0f} min of compute on {hardware}; groups may run as processes side by side, so the throughput figures
are those of a shared machine). Every trained row: {steps} steps × batch {batch_size} × block {block_size} on the
domains' training files (labelled: `--train NAME=FILE`; label-free: the same files without names), the `dynamic`
preset and no other tuning. Each expert (French, German, code) is the same English base fine-tuned with one recipe
(`superpose.demo.tiny_experts.finetune_expert`) on `fr/train.txt`, `de/train.txt` or `code/train.jsonl` (Python
standard-library modules). Reported on the second half of each valid file (novels: half the paragraphs; code and
docs: half the characters); sweeps (★) chosen on the first half. The code-switched sets are built from those
halves with `superpose mix-data --segment auto` (400 lines of 2-6 segments: sentences of prose, blank-line chunks
of code); `docs` are package READMEs (English prose with code examples, never trained on). † reads the answer (a
bound, not a competitor). Ratios: × oracle (per sequence, the labelled domain's own model) and × mix, the
training-free `fixed_share_mix` (a Bayesian mixture over fixed-share mixtures at the rates 0, 0.001, 0.005, 0.02,
0.05, 0.1, 0.2, which needs no selection). Targets: each single-domain set ≤ 1.00× mix, code-switched lines and
docs ≤ 0.98× mix.
"""
RESCORED_NOTE = """
The trained rows were then scored again with the output temperatures (`--rescore`: they act in evaluation mode only,
so training is unchanged and the saved runs are what the current preset trains); the minutes add both.
"""


def measure_saved_runs(out: Path, experts_dir: Path) -> None:
    """Cached generation speed of the saved dynamic runs against the base, in one process (alone on the machine)."""
    for count in GROUPS:
        tag = f"{count - 1}-experts"
        runs = {path.name: SuperposedModel.from_pretrained(path)
                for path in sorted((out / "runs").glob(f"dynamic_{tag}_*"))
                if "_code_" not in path.name}  # the language groups' runs
        if not runs:
            continue
        speed = _generation_speed({"base": load_causal_lm(str(experts_dir / "base")).eval(), **runs}, 4096)
        print(", ".join(f"{name}: {tps:.0f} tok/s ({tps / speed['base']:.2f}x base)" for name, tps in speed.items()))


# ---- speculative decoding ---------------------------------------------------------------------------------

PROMPT_TOKENS = 16
PROMPTS_PER_SET = 4


def prompt_sets(tokenizer, data_dir: Path, languages: list[str]) -> dict[str, list[torch.Tensor]]:
    """16-token prompts from the selection halves: each language's first lines, and code-switched lines (their
    first 16 tokens; a switch inside them comes within the 64 generated tokens' context only if the line has it)."""
    sets = {}
    for lang in languages:
        lines = [t for t in load_texts(data_dir / f"{lang}_select.txt") if len(tokenizer(t).input_ids) >= PROMPT_TOKENS]
        sets[lang] = [torch.tensor([tokenizer(t).input_ids[:PROMPT_TOKENS]]) for t in lines[:PROMPTS_PER_SET]]
    mixed = data_dir / ("mixed_" + "_".join(languages) + "_select.jsonl")
    if mixed.is_file():
        texts = [json.loads(line)["text"] for line in mixed.read_text(encoding="utf-8").splitlines() if line.strip()]
        sets["code-switched"] = [torch.tensor([tokenizer(t).input_ids[:PROMPT_TOKENS]])
                                 for t in texts[:PROMPTS_PER_SET]]
    return sets


GREEDY = {"do_sample": False}
# sampled decoding as users run it: a common chat setting, and a checkpoint's defaults (temperature 1, top-k 50)
SAMPLINGS = {"sampled T=0.8, top-p 0.95": {"do_sample": True, "temperature": 0.8, "top_p": 0.95},
             "sampled, checkpoint defaults": {"do_sample": True}}


def _decode(model, prompt: torch.Tensor, new_tokens: int, decoding: dict = GREEDY, seed: int = 0, **options) -> float:
    torch.manual_seed(seed)
    tick = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, **decoding, **options)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return time.perf_counter() - tick


def sampled_rows(base, model, prompts: list[torch.Tensor], decoding: dict, new_tokens: int = 64) -> list[dict]:
    """Sampled batch-1 decoding (seeded per prompt): the base, the model densely and speculatively (`auto`);
    tokens/s summed over the prompts (best of two passes), acceptance and stack steps per token. The outputs
    are draws, so they are not compared token for token (tests check the distribution)."""
    rows = []
    for label, net, mode in (("base", base, None), ("dense", model, 0), ("speculative=auto", model, "auto")):
        best, drafted, accepted, steps, tokens = math.inf, 0, 0, 0, 0
        for _ in range(2):
            seconds, drafted, accepted, steps, tokens = 0.0, 0, 0, 0, 0
            for i, prompt in enumerate(prompts):
                options = {} if mode is None else {"speculative": mode}
                seconds += _decode(net, prompt, new_tokens, decoding, seed=i, **options)
                stats = getattr(net, "speculation_stats", None)
                if mode is not None and stats.mode == "speculative":
                    drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
                    steps, tokens = steps + stats.stack_steps, tokens + stats.new_tokens
            best = min(best, seconds)
        tps = len(prompts) * new_tokens / best
        row = {"decoding": label, "tokens_per_s": tps}
        if mode is not None:
            row.update(vs_base=tps / rows[0]["tokens_per_s"], acceptance=accepted / drafted if drafted else None,
                       stack_steps_per_token=steps / tokens if tokens else float(len(model.stacks)))
        rows.append(row)
    return rows


def speculative_rows(base, model, prompts: list[torch.Tensor], new_tokens: int = 64,
                     modes=(0, "auto", 8)) -> list[dict]:
    """Greedy batch-1 decoding of each prompt: the base, the model decoded densely (`speculative=0`) and
    speculatively; tokens/s summed over the prompts (best of two passes), acceptance and stack steps per token.
    Checks that every speculative output equals the dense one."""
    rows = []
    base_seconds = min(sum(_decode(base, p, new_tokens) for p in prompts) for _ in range(2))
    rows.append({"decoding": "base", "tokens_per_s": len(prompts) * new_tokens / base_seconds})
    reference = {}
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            reference[i] = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                          do_sample=False, pad_token_id=0, speculative=0).tolist()
    for mode in modes:
        best, drafted, accepted, steps, tokens = math.inf, 0, 0, 0, 0
        for _ in range(2):
            seconds = 0.0
            drafted = accepted = steps = tokens = 0
            for i, prompt in enumerate(prompts):
                tick = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                         do_sample=False, pad_token_id=0, speculative=mode)
                seconds += time.perf_counter() - tick
                if out.tolist() != reference[i]:
                    raise AssertionError(f"speculative={mode} changed the output of prompt {i}")
                stats = model.speculation_stats
                if stats.mode == "speculative":
                    drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
                    steps, tokens = steps + stats.stack_steps, tokens + stats.new_tokens
            best = min(best, seconds)
        tps = len(prompts) * new_tokens / best
        rows.append({"decoding": "dense" if mode == 0 else f"speculative={mode}", "tokens_per_s": tps,
                     "vs_base": tps / rows[0]["tokens_per_s"],
                     "acceptance": accepted / drafted if drafted else None,
                     "stack_steps_per_token": steps / tokens if tokens else float(len(model.stacks))})
    return rows


def forward_ratio(base, model, batch: int, length: int, vocab: int) -> float:
    """Whole-sequence forward tokens/s of `model` over the base's (best of 3)."""
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    times = []
    for net in (base, model):
        best = math.inf
        for _ in range(3):
            tick = time.perf_counter()
            with torch.no_grad():
                net(ids)
            best = min(best, time.perf_counter() - tick)
        times.append(best)
    return times[0] / times[1]


def _row_text(rows: list[dict]) -> str:
    out = []
    for row in rows:
        if row["decoding"] == "base":
            out.append(f"base {row['tokens_per_s']:.0f} tok/s")
            continue
        acc = row["acceptance"]
        out.append(f"{row['decoding']} {row['tokens_per_s']:.0f} tok/s ({row['vs_base']:.2f}× base, acceptance "
                   f"{'–' if acc is None else f'{acc:.0%}'}, {row['stack_steps_per_token']:.2f} stack steps/token)")
    return "; ".join(out)


def measure_speculative(out: Path, experts_dir: Path, data_dir: Path, new_tokens: int = 64) -> dict:
    """Dense and speculative rows for the saved dynamic runs (two and three stacks), per prompt set."""
    record = {}
    tokenizer = load_tokenizer(str(experts_dir / "base"))
    base = load_causal_lm(str(experts_dir / "base")).eval()
    for count, names in GROUPS.items():
        runs = sorted(p for p in (out / "runs").glob(f"dynamic_{count - 1}-expert*") if "_code_" not in p.name)
        if not runs:
            continue
        model = rescored(runs[0])  # with the current preset's output temperatures
        sets = prompt_sets(tokenizer, data_dir, [LANGS[n] for n in names])
        record[runs[0].name] = {name: speculative_rows(base, model, prompts, new_tokens)
                                for name, prompts in sets.items()}
        for label, decoding in SAMPLINGS.items():
            record[runs[0].name].update({f"{name}, {label}": sampled_rows(base, model, prompts, decoding, new_tokens)
                                         for name, prompts in sets.items()})
        record[runs[0].name]["forward_ratio"] = forward_ratio(base, model, 8, 128, tokenizer.vocab_size)
        for name, rows in record[runs[0].name].items():
            print(runs[0].name, name, rows if name == "forward_ratio" else _row_text(rows), flush=True)
    return record


def train_speed_runs(corpus: Path, out: Path, experts_dir: Path, steps: int, batch_size: int = 16,
                     block_size: int = 128) -> None:
    """A shorter budget than `run_dynamic` for the speed rows alone: the labelled dynamic run of each group,
    `steps` steps, no evaluation; saved where `measure_speculative` looks (`out/runs/dynamic_<k>-experts_labelled`)."""
    ensure_expert(corpus, experts_dir, ExpertRecipe(**json.loads((experts_dir / "recipe.json").read_text())["recipe"]),
                  "de")
    tokenizer = load_tokenizer(str(experts_dir / "base"))
    for count, names in GROUPS.items():
        split_halves(corpus, out / "data", {n: LANGS[n] for n in names}, "mixed_" + "_".join(LANGS[n] for n in names))
        model_settings, train_settings = preset_settings("dynamic")
        train_settings = type(train_settings)(**{**train_settings.__dict__, "max_steps": steps,
                                                 "batch_size": batch_size, "block_size": block_size, "seed": 0,
                                                 "max_valid_blocks": 16, "device": "cpu"})
        base = load_causal_lm(str(experts_dir / "base"))
        experts = {n: load_causal_lm(str(experts_dir / n)) for n in names[1:]}
        torch.manual_seed(0)
        model = SuperposedModel.from_models(base, experts, model_settings, str(experts_dir / "base"),
                                            expert_paths={n: str(experts_dir / n) for n in names[1:]})
        run_dir = out / "runs" / f"dynamic_{count - 1}-experts_labelled"
        shutil.rmtree(run_dir, ignore_errors=True)
        train(model, tokenizer, {n: str(corpus / LANGS[n] / "train.txt") for n in names}, None, run_dir,
              train_settings, progress=False)
        print(f"trained {run_dir} ({steps} steps)", flush=True)


def random_weight_rows(layers: int = 12, hidden: int = 768, heads: int = 12, vocab: int = 50257,
                       new_tokens: int = 64) -> dict:
    """GPT-2-124M-shaped stacks with random weights: per-step cost only. The experts are copies of the base, so
    every draft is kept (the cost of speculation at full acceptance); forward at batch 2 x
    256 as in the speed targets."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=vocab, n_positions=512,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(config).eval()
    dynamic, _ = preset_settings("dynamic")
    record = {}
    for count in (2, 3):
        experts = {f"x{i}": copy.deepcopy(base) for i in range(1, count)}
        model = SuperposedModel.from_models(base, experts, dynamic).eval()
        prompts = [torch.randint(5, vocab, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(i))
                   for i in range(2)]
        rows = speculative_rows(base, model, prompts, new_tokens, modes=(0, "auto"))
        record[f"{count} stacks"] = {"rows": rows, "forward_ratio": forward_ratio(base, model, 2, 256, vocab)}
        print(f"GPT-2-124M shape, {count} stacks:", _row_text(rows),
              f"forward {record[f'{count} stacks']['forward_ratio']:.2f}× base", flush=True)
    return record


if __name__ == "__main__":  # python benchmarks/dynamic_bench.py [--speculative] [--random-124m]
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--speculative", action="store_true",
                        help="dense and speculative rows of the saved dynamic runs, per prompt set: greedy, and "
                             "sampled (T=0.8 top-p 0.95; the checkpoint's defaults)")
    parser.add_argument("--random-124m", action="store_true", help="the GPT-2-124M-shape random-weight row")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="first train the labelled dynamic runs for this many steps (the speed rows' budget)")
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "full"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out)
    if args.random_124m:
        write_json(random_weight_rows(), root / "speculative_124m.json")
    if args.train_steps:
        train_speed_runs(Path(args.corpus), root / "dynamic", root / "experts", args.train_steps)
    if args.speculative:
        write_json(measure_speculative(root / "dynamic", root / "experts", root / "dynamic" / "data"),
                   root / "speculative.json")
    if not (args.random_124m or args.speculative):
        measure_saved_runs(root / "dynamic", root / "experts")
