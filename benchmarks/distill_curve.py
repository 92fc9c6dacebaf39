"""Distillation budget curve: how many steps make one stack as good as its superposed teacher.

    python benchmarks/distill_curve.py --corpus ../shared/corpus --plan          # every published row at 4x
    python benchmarks/distill_curve.py --corpus ../shared/corpus --plan --factor 8 --groups 3
    python benchmarks/distill_curve.py --corpus ../shared/corpus --groups 2 --rows full --factor 2 --lr 1e-3
    python benchmarks/distill_curve.py --quick                                  # tiny models, a few minutes

Each row is `superpose distill RUN --train ... --start EXPERT --max-steps (factor x budget) --save-every N
--keep-work` on an even mix of the group's `train` files (at most budget x batch / stacks blocks per file, as the
one-stack rows), the teacher being the dynamic part's labelled run of the group (`real_text.py --part dynamic`
trains it). Every kept checkpoint is then scored on the report halves: each domain's perplexity as a multiple of
the per-sequence oracle (the best stack on each block, in hindsight), and the code-switched lines' (and for code,
the READMEs') perplexity as a multiple of the teacher's. Writes `out/distill_curve/curve_<group>.json`,
`docs/distill_curve.png` and, unless --no-write, the curve table in BENCHMARKS.md between its markers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from dynamic_bench import ALL_GROUPS, LANGS, group_files
from one_stack import EARLIER_LR
from sections import write_section

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.data.text import load_texts, tokenize_blocks
from superpose.evaluation.scoring import scoring_batches
from superpose.model.superposed import SuperposedModel
from superpose.training.checkpoint import list_checkpoints, load_checkpoint
from superpose.training.distill import DistillSettings, distill
from superpose.training.distill_folder import work_folder
from superpose.training.student import make_student, merged_model, trainable_parameters

ROOT = Path(__file__).resolve().parent.parent
ROWS = {"full": None, "lora": 16}  # row -> LoRA rank (None: all weights)
FULL = dict(steps=400, batch_size=16, block_size=128, every=100, eval_blocks=48)
QUICK = dict(steps=20, batch_size=8, block_size=64, every=10, eval_blocks=8)  # real_text.py --quick


@torch.no_grad()
def block_nlls(model, blocks: list[torch.Tensor], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """(N,) each block's summed next-token NLL (float64): perplexities and per-block oracles are built from it."""
    out = []
    for _, batch in scoring_batches(blocks, batch_size, pad_id, "cpu"):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
        labels = batch.labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        out.append((nll * (labels != -100)).sum(-1).double())
    return torch.cat(out)


def ppl(nlls: torch.Tensor, tokens: int) -> float:
    return math.exp(float(nlls.sum()) / tokens)


def eval_sets(files: dict, names: list[str], tokenizer, block_size: int, cap: int,
              half: str = "report") -> dict[str, list[torch.Tensor]]:
    """Each domain's `half` (report or select), the code-switched lines and (code groups) the READMEs, as blocks."""
    wanted = {LANGS[n]: files[half][n] for n in names}
    wanted["switch"] = files[half]["switch"]
    if "docs" in files[half]:
        wanted["docs"] = files[half]["docs"]
    return {name: tokenize_blocks(load_texts(path), tokenizer, block_size, cap) for name, path in wanted.items()}


def references(run_dir: Path, experts_dir: Path, names: list[str], sets: dict, pad_id: int) -> dict:
    """Per set: the per-sequence oracle's and the teacher's perplexity, and the token count."""
    stacks = [load_causal_lm(str(experts_dir / n)) for n in names]
    teacher = SuperposedModel.from_pretrained(run_dir)
    record = {}
    for name, blocks in sets.items():
        tokens = sum(b.numel() - 1 for b in blocks)
        best = torch.stack([block_nlls(s, blocks, pad_id) for s in stacks]).min(0).values
        record[name] = {"tokens": tokens, "oracle_ppl": ppl(best, tokens),
                        "teacher_ppl": ppl(block_nlls(teacher, blocks, pad_id), tokens)}
    return record


def scored(model, sets: dict, refs: dict, pad_id: int) -> dict:
    """Per set: the model's perplexity, × the oracle and × the teacher."""
    point = {}
    for name, blocks in sets.items():
        value = ppl(block_nlls(model, blocks, pad_id), refs[name]["tokens"])
        point[name] = {"ppl": value, "x_oracle": value / refs[name]["oracle_ppl"],
                       "x_teacher": value / refs[name]["teacher_ppl"]}
    return point


def curve_points(folder: Path, stack, settings: DistillSettings, sets: dict, refs: dict, pad_id: int) -> list[dict]:
    """Every kept checkpoint of a finished row, scored: per set the perplexity, × oracle and × teacher."""
    student = make_student(stack, settings)
    params = trainable_parameters(student)
    points = []
    for checkpoint in list_checkpoints(work_folder(folder)):
        trainable, _, progress = load_checkpoint(checkpoint)
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(trainable[name])
        points.append({"step": progress["step"], **scored(merged_model(student).eval(), sets, refs, pad_id)})
    return points


def teacher_dir(out: Path, names: list[str]) -> Path:
    run_dir = out / "dynamic" / "runs" / ("dynamic_" + f"{len(names) - 1}-experts" +
                                          ("_code" if "code" in names else "") + "_labelled")
    if not (run_dir / "superposed.safetensors").is_file():
        raise SystemExit(f"no teacher run in {run_dir}: run `python benchmarks/real_text.py --part dynamic` first")
    return run_dir


@dataclass(frozen=True)
class Recipe:
    """One row's `superpose distill` settings. Defaults are the first rows' (pure imitation, no switched blocks,
    the group's first fine-tune as the start, T = 1, and the LR they were measured at: 5e-4 on all weights, 2e-3
    with LoRA); a label names only what differs. The LR is pinned, not distill's own default, so the published rows
    still reproduce after the curve changed that default."""

    row: str = "full"
    switch_rate: float = 0.0
    teacher_weight: float = 1.0
    start: str | None = None
    lr: float | None = None
    temperature: float = 1.0

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else EARLIER_LR[self.row]

    def label(self) -> str:
        return self.row + (f", switch {self.switch_rate:g}" if self.switch_rate else "") + (
            f", λ {self.teacher_weight:g}" if self.teacher_weight != 1 else "") + (
            f", start {self.start}" if self.start else "") + (f", lr {self.lr:g}" if self.lr is not None else "") + (
            f", T {self.temperature:g}" if self.temperature != 1 else "")


DEFAULT = dict(switch_rate=0.2, teacher_weight=0.2)  # `superpose distill`'s defaults; its LR is a row's `lr=`
REPLAY = dict(switch_rate=0.2, teacher_weight=0.0)
# every published row, by budget factor and group: `--plan` reruns them with one command
PLAN = {
    4: {2: [Recipe(), Recipe(switch_rate=0.2), Recipe(**REPLAY), Recipe(switch_rate=0.2, teacher_weight=0.5),
            Recipe(**DEFAULT), Recipe("lora", **DEFAULT), Recipe(**DEFAULT, lr=1e-3), Recipe(**REPLAY, lr=1e-3),
            Recipe(switch_rate=0.2, teacher_weight=0.1, lr=1e-3)],
        3: [Recipe(switch_rate=0.2), Recipe(**DEFAULT), Recipe(**REPLAY), Recipe(**REPLAY, start="base"),
            Recipe(**DEFAULT, start="base"), Recipe(**DEFAULT, lr=1e-3), Recipe(**REPLAY, lr=1e-3),
            Recipe("lora", **DEFAULT)],
        "code2": [Recipe(switch_rate=0.2), Recipe(**DEFAULT), Recipe(**REPLAY), Recipe("lora", **DEFAULT),
                  Recipe(**DEFAULT, lr=1e-3), Recipe(**REPLAY, lr=1e-3)]},
    8: {3: [Recipe(**DEFAULT), Recipe(**REPLAY)]},
    2: {2: [Recipe(**DEFAULT), Recipe(**DEFAULT, lr=1e-3), Recipe(**DEFAULT, lr=2.5e-4),
            Recipe(**DEFAULT, temperature=2.0)]},
}

# the plot keeps these rows (the table has them all): distill's current defaults, replay at its rate, the earlier
# 5e-4 default, pure imitation and LoRA
_NOW = DistillSettings()
PLOTTED = {Recipe(switch_rate=_NOW.switch_rate, teacher_weight=_NOW.teacher_weight, lr=_NOW.resolved_lr).label():
           "default", Recipe(**REPLAY, lr=_NOW.resolved_lr).label(): "replay",
           Recipe(**DEFAULT).label(): "old default", Recipe(switch_rate=0.2).label(): "imitation",
           Recipe("lora", **DEFAULT).label(): "LoRA"}


def row_folder(out: Path, group, label: str, factor: int = 4) -> Path:
    suffix = "" if factor == 4 else f"-x{factor}"
    return out / "distill_curve" / f"{group}-{label.replace(', ', '-').replace(' ', '')}{suffix}"


def curve_path(out: Path, group, factor: int = 4) -> Path:
    """Rows at the default 4x budget share one file per group; rows at any other budget keep their own."""
    return out / "distill_curve" / (f"curve_{group}.json" if factor == 4 else f"curve_{group}-x{factor}.json")


class Group:
    """A group's teacher, files and scored sets: the report halves for the curve, the selection halves for
    choosing defaults (each row's final student is scored on both)."""

    def __init__(self, group, corpus: Path, out: Path, config: dict):
        self.group, self.out, self.config = group, out, config
        self.names = ALL_GROUPS[group]
        self.experts_dir = out / "experts"
        self.run_dir = teacher_dir(out, self.names)
        self.files = group_files(corpus, out / "dynamic" / "data", self.names)
        tokenizer = load_tokenizer(str(self.experts_dir / "base"))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.sets, self.refs = {}, {}
        for half in ("report", "select"):
            self.sets[half] = eval_sets(self.files, self.names, tokenizer, config["block_size"],
                                        config["eval_blocks"], half)
            self.refs[half] = references(self.run_dir, self.experts_dir, self.names, self.sets[half], self.pad_id)

    def select_point(self, folder: Path) -> dict:
        """The saved (final) student of a row, scored on the selection halves."""
        return scored(load_causal_lm(str(folder)).eval(), self.sets["select"], self.refs["select"], self.pad_id)


def run_group(group: Group, recipes: list[Recipe], factor: int, top_k: int | None) -> dict:
    names, config = group.names, group.config
    per_file = math.ceil(config["steps"] * config["batch_size"] / len(names))
    record = {"group": group.group, "names": names, "start": names[1], "references": group.refs["report"],
              "select_references": group.refs["select"], "rows": {},
              "budget": {**config, "factor": factor, "blocks_per_file": per_file, "top_k": top_k}}
    for recipe in recipes:
        if recipe.start is not None and recipe.start not in names:
            raise SystemExit(f"--start {recipe.start!r} is not one of group {group.group}'s stacks {names}")
        if recipe.start == names[1]:
            recipe = dataclasses.replace(recipe, start=None)  # the default start is not named in a label
        start = recipe.start or names[1]
        label = recipe.label()
        folder = row_folder(group.out, group.group, label, factor)
        shutil.rmtree(folder, ignore_errors=True)
        settings = DistillSettings(start=start, lora=ROWS[recipe.row], max_steps=factor * config["steps"],
                                   batch_size=config["batch_size"], block_size=config["block_size"],
                                   max_train_blocks=per_file, save_every=config["every"], keep_checkpoints=10**6,
                                   switch_rate=recipe.switch_rate, top_k=top_k,
                                   teacher_weight=recipe.teacher_weight, lr=recipe.peak_lr(),
                                   temperature=recipe.temperature, device="cpu")
        tick = time.perf_counter()
        distill(group.run_dir, {LANGS[n]: group.files["train"][n] for n in names}, None, folder, settings,
                keep_work=True)
        minutes = (time.perf_counter() - tick) / 60
        points = curve_points(folder, load_causal_lm(str(group.experts_dir / start)), settings,
                              group.sets["report"], group.refs["report"], group.pad_id)
        record["rows"][label] = {"minutes": minutes, "points": points, "switch_rate": recipe.switch_rate,
                                 "teacher_weight": recipe.teacher_weight, "start": start,
                                 "lr": settings.resolved_lr, "temperature": recipe.temperature,
                                 "references": group.refs["report"], "select": group.select_point(folder)}
        shutil.rmtree(work_folder(folder), ignore_errors=True)
        print(f"group {group.group}, {label}: {minutes:.1f} min;", summary_line(points[-1], group.sets["report"]),
              flush=True)
    return record


def score_saved_on_select(record: dict, group: Group) -> None:
    """Rows saved before selection scoring existed: score their final students (still in their folders)."""
    record["select_references"] = group.refs["select"]
    for label, data in record["rows"].items():
        if "select" not in data:
            data["select"] = group.select_point(row_folder(group.out, record["group"], label,
                                                           record["budget"]["factor"]))


def summary_line(point: dict, sets) -> str:
    return ", ".join(f"{n} {point[n]['x_oracle']:.3f}× oracle / {point[n]['x_teacher']:.3f}× teacher" for n in sets)


def first_step_within(points: list[dict], sets: list[str], bound: float, key: str) -> int | None:
    """The first checkpoint from which every set stays at or under `bound` (× oracle or × teacher)."""
    for i, point in enumerate(points):
        if all(p[s][key] <= bound for p in points[i:] for s in sets):
            return point["step"]
    return None


def markdown(records: list[dict], hardware: str, command: str) -> str:
    budget = records[0]["budget"]
    cache = f", top-{budget['top_k']}" if budget["top_k"] else ""
    title = ("## Distillation budget curve" if budget["factor"] == 4
             else f"### Distillation rows at {budget['factor']}× the teacher's budget")
    lines = [title, "",
             f"Produced by `{command}` on {hardware}. Each row distils the group's labelled `dynamic` run (the "
             f"teacher; {budget['steps']} steps × {budget['batch_size']} × {budget['block_size']}) into its first "
             "fine-tune (or the stack a row names as `start S`) with `superpose distill`'s settings "
             f"(T = 1 unless the row names `T t`, peak LR {EARLIER_LR['full']:g} (LoRA {EARLIER_LR['lora']:g}) "
             "unless it names `lr X`, "
             f"live teacher{cache}; "
             "λ = 1 unless the row names "
             "`λ L`, i.e. `--teacher-weight L`, 0 being replay; `--switch-rate P` where the row names `switch P`, "
             "else 0), up to "
             f"{budget['factor']}× that budget, on an even mix of the `train` files (≤ {budget['blocks_per_file']} "
             f"blocks each). Checkpoints every {budget['every']} steps are scored on the report halves "
             f"(≤ {budget['eval_blocks']} blocks per set): single-domain sets as × the per-sequence oracle, the "
             "code-switched lines (`switch`) and READMEs (`docs`) as × the teacher."
             + (" Plot: `docs/distill_curve.png` (default, replay, old default at 5e-4, pure imitation, LoRA)."
                if budget["factor"] == 4 else ""), ""]
    lines += ["| group | row | minutes | first step ≤ 1.05× oracle on every domain | first step ≤ 1.10× teacher "
              "on mixed sets | at the last step |", "|---|---|---|---|---|---|"]
    for record in records:
        domains = [LANGS[n] for n in record["names"]]
        mixed = [s for s in ("switch", "docs") if s in record["references"]]
        for row, data in record["rows"].items():
            points = data["points"]
            domain_step = first_step_within(points, domains, 1.05, "x_oracle")
            mixed_step = first_step_within(points, mixed, 1.10, "x_teacher")
            last = points[-1]
            cells = [f"{d} {last[d]['x_oracle']:.3f}" for d in domains] + [f"{m} {last[m]['x_teacher']:.3f}×T"
                                                                           for m in mixed]
            lines.append(f"| {'+'.join(record['names'])} | {row} | {data['minutes']:.0f} | "
                         f"{domain_step if domain_step is not None else 'none'} | "
                         f"{mixed_step if mixed_step is not None else 'none'} | step {last['step']}: "
                         f"{', '.join(cells)} |")
    selected = [(record, row, data) for record in records for row, data in record["rows"].items() if "select" in data]
    if selected:
        lines += ["", "Each row's final student on the **selection** halves (what the defaults are chosen on; the "
                  "curve above is the report halves):", "", "| group | row | × oracle per domain, × teacher on mixed "
                  "sets |", "|---|---|---|"]
        for record, row, data in selected:
            final = data["select"]
            cells = [f"{d} {final[d]['x_oracle']:.3f}" for d in (LANGS[n] for n in record["names"])]
            cells += [f"{m} {final[m]['x_teacher']:.3f}×T" for m in ("switch", "docs") if m in final]
            # the rule the defaults are chosen by: the lowest geometric-mean perplexity over the sets
            mean_log = sum(math.log(v["ppl"]) for v in final.values()) / len(final)
            cells.append(f"geometric-mean PPL {math.exp(mean_log):.1f}")
            lines.append(f"| {'+'.join(record['names'])} | {row} | {', '.join(cells)} |")
    return "\n".join(lines) + "\n\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(5.5 * len(records), 7), squeeze=False)
    for ax, record in zip(axes[0], records):
        domains = [LANGS[n] for n in record["names"]]
        mixed = [s for s in ("switch", "docs") if s in record["references"]]
        styles = ["-", "--", ":", "-."]  # one colour per row, one line style per set
        rows = {row: data for row, data in record["rows"].items() if row in PLOTTED} or record["rows"]
        for index, (row, data) in enumerate(rows.items()):
            steps = [p["step"] for p in data["points"]]
            colour = f"C{list(PLOTTED).index(row) if row in PLOTTED else index}"  # a row keeps its colour
            name_row = f"{PLOTTED[row]} ({row})" if PLOTTED.get(row) else row
            for k, name in enumerate(domains):
                ax.plot(steps, [p[name]["x_oracle"] for p in data["points"]], styles[k % 4], color=colour,
                        label=f"{name_row}: {name} ×oracle")
            for k, name in enumerate(mixed):
                ax.plot(steps, [p[name]["x_teacher"] for p in data["points"]], styles[k % 4], color=colour,
                        marker=".", label=f"{name_row}: {name} ×teacher")
        ax.axhline(1.05, color="grey", lw=0.6)
        ax.axhline(1.10, color="grey", lw=0.6, ls="--")
        ax.axvline(record["budget"]["steps"], color="black", lw=0.5)
        ax.set_title(" + ".join(record["names"]))
        ax.set_xlabel("distillation steps (vertical line: the teacher's budget)")
        ax.set_ylabel("perplexity ratio (cut at 1.5)")
        ax.set_ylim(top=1.5)  # the first checkpoints of a new language sit far above; the targets are near 1
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: never over a line
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def record_command(record: dict) -> str:
    """The command that trains a saved record (kept in it, so a table rebuilt from JSON names it)."""
    if "command" not in record:
        record["command"] = "python benchmarks/distill_curve.py " + " ".join(
            a for a in sys.argv[1:] if a not in ("--from-saved", "--no-write", "--score-select"))
    return record["command"]


def recipes(args, group) -> list[Recipe]:
    """`--plan`: the published rows of this budget; otherwise one row per `--rows` from the flags."""
    if args.plan:
        return PLAN.get(args.factor, {}).get(group, [])
    return [Recipe(row, args.switch_rate, args.teacher_weight, args.start, args.lr, args.temperature)
            for row in args.rows]


def _group(value: str):
    if value.isdigit() and int(value) in ALL_GROUPS:
        return int(value)
    if value in ALL_GROUPS:
        return value
    raise argparse.ArgumentTypeError(f"a group is one of {list(ALL_GROUPS)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="the real-text benchmark's folder")
    parser.add_argument("--groups", type=_group, nargs="+", default=[2, 3, "code2"])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--factor", type=int, default=4, help="steps: this many times the teacher's budget")
    parser.add_argument("--switch-rate", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=None, help="distil from a top-k cache (default: live teacher)")
    parser.add_argument("--teacher-weight", type=float, default=1.0, help="λ (0: replay, no teacher)")
    parser.add_argument("--start", default=None,
                        help="the stack the student starts from (default: the group's first fine-tune)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default: the first rows', 5e-4 or 2e-3 with LoRA)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the KL term's temperature")
    parser.add_argument("--plan", action="store_true",
                        help="run every published row of this --factor for the --groups (one command per table)")
    parser.add_argument("--quick", action="store_true", help="the quick real-text setup (tiny models)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md and the plot")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-saved", action="store_true",
                        help="train nothing: rebuild the table and plot from the groups' saved curve_<group>.json")
    parser.add_argument("--score-select", action="store_true",
                        help="with --from-saved: score saved rows' final students on the selection halves")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.plan:
        row_flags = {"--rows": args.rows != list(ROWS), "--switch-rate": args.switch_rate != 0,
                     "--teacher-weight": args.teacher_weight != 1, "--start": args.start is not None,
                     "--lr": args.lr is not None, "--temperature": args.temperature != 1}
        if any(row_flags.values()):
            named = ", ".join(flag for flag, on in row_flags.items() if on)
            parser.error(f"--plan runs the published rows as they are; drop {named}")
        args.groups = [g for g in args.groups if g in PLAN.get(args.factor, {})]
        if not args.groups:
            raise SystemExit(f"no published rows at --factor {args.factor}: the plan has factors {list(PLAN)}")
    out = Path(args.out) / ("quick" if args.quick else "full")
    config = QUICK if args.quick else FULL
    if args.from_saved:
        records = [json.loads(curve_path(out, g, args.factor).read_text()) for g in args.groups]
        if args.score_select:
            for record in records:
                score_saved_on_select(record, Group(record["group"], Path(args.corpus), out, config))
    else:
        records = [run_group(Group(g, Path(args.corpus), out, config), recipes(args, g), args.factor, args.top_k)
                   for g in args.groups]
    for record in records:
        record_command(record)
        path = curve_path(out, record["group"], args.factor)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and not args.from_saved:  # rows of an earlier invocation at the same budget stay
            earlier = json.loads(path.read_text())
            if {k: v for k, v in earlier["budget"].items() if k != "switch_rate"} == record["budget"]:
                record["rows"] = {**earlier["rows"], **record["rows"]}
                earlier_command = earlier.get("command", "")
                if earlier_command and earlier_command != record["command"]:
                    record["command"] = f"{earlier_command}` then `{record['command']}"
            else:  # another budget: never overwrite the earlier rows
                path = path.with_name(f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}.json")
                print(f"{path.name}: the saved curve has another budget, so these rows are kept apart", flush=True)
        path.write_text(json.dumps(record, indent=2))
    command = "` and `".join(dict.fromkeys(record["command"] for record in records))
    if all(label in {r.label() for r in PLAN.get(args.factor, {}).get(record["group"], [])}
           for record in records for label in record["rows"]):  # every row is published: one command redoes them
        command = "python benchmarks/distill_curve.py --corpus CORPUS --plan" + (
            f" --factor {args.factor}" if args.factor != 4 else "") + " --groups " + " ".join(
            str(record["group"]) for record in records)
    hardware = (f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s), "
                f"torch {torch.__version__}")
    section = markdown(records, hardware, command)
    print(section)
    if not args.no_write and not args.quick:
        if args.factor == 4:  # the curve; rows at other budgets get a table of their own, no plot
            plot(records, ROOT / "docs" / "distill_curve.png")
        name = "distill curve" if args.factor == 4 else f"distill curve x{args.factor}"
        write_section(ROOT / "BENCHMARKS.md", name, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
