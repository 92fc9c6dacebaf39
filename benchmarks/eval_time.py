"""How long `superpose eval` takes with the default baselines on the real-text benchmark's held-out sets.

    python benchmarks/eval_time.py --corpus ../shared/corpus                # the default preset and --preset paper
    python benchmarks/eval_time.py --corpus ../shared/corpus --agreement    # also time `eval --agreement`

The sets are the real-text benchmark's (`halves.py`): the report halves of en/fr `valid.txt` and a code-switched
set built from them (3 sets), with the selection halves (and their own code-switched set) choosing the sweeps, two
stacks (the English base and its French fine-tune, `real_text.py`'s recipe; built here when missing, a few
minutes). Each superposed run is trained for a few steps only: its quality does not change the time an
evaluation takes. Every command runs as a user would type it, in its own process. The table shows its wall time
and its CPU time (user + system: on a machine other jobs share, what it would take alone with one thread),
with the evaluation's own tokens/s of the superposed model, the base and `fixed_share`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from halves import split_halves
from real_text import FULL

from superpose.core.text_tables import format_table
from superpose.data.text import load_texts
from superpose.demo.tiny_experts import build_experts

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 300  # the evaluation-time target: the default baselines in under 5 minutes on 2 CPU cores
# label: (run folder, `superpose train` flags)
RUNS = {"default preset (dynamic)": ("dynamic", []), "--preset paper": ("paper", ["--preset", "paper"])}


def _experts(experts_dir: Path, files: dict) -> None:
    recipe_file = experts_dir / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text())["recipe"] == asdict(FULL["recipe"]):
        return
    build_experts(load_texts(files["train"]["base"]), load_texts(files["train"]["fr"]), experts_dir, FULL["recipe"],
                  "fr", progress=False)


def _superpose(*args: str, threads: int) -> tuple[float, float]:
    """Run `superpose ARGS` in a fresh process: (wall seconds, CPU seconds). On a machine that other jobs share,
    the CPU time is what the command would take alone (with one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before, tick = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "superpose", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - tick, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _pairs(flag: str, files: dict[str, str]) -> list[str]:
    return [arg for name, path in files.items() for arg in (flag, f"{name}={path}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"), help="folder with en/ and fr/")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "eval_time"), help="work folder")
    parser.add_argument("--experts", default=str(ROOT / "benchmarks" / "out" / "full" / "experts"),
                        help="the real-text benchmark's experts (built there when missing)")
    parser.add_argument("--train-steps", type=int, default=20, help="training steps of each superposed run")
    parser.add_argument("--agreement", action="store_true", help="also time `eval --agreement`")
    parser.add_argument("--runs", nargs="+", choices=sorted(folder for folder, _ in RUNS.values()),
                        default=[folder for folder, _ in RUNS.values()], help="which superposed runs to time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every command (default 1)")
    args = parser.parse_args()
    corpus, out, experts = Path(args.corpus), Path(args.out), Path(args.experts)
    files = split_halves(corpus, out / "data")
    _experts(experts, files)
    load_before = os.getloadavg()[0]
    rows = []
    for label, (folder, preset) in RUNS.items():
        if folder not in args.runs:
            continue
        run = out / folder
        train_seconds = math.nan  # a run trained by an earlier invocation is reused
        if not (run / "config.json").is_file():
            train_seconds, _ = _superpose(
                "train", "--base", str(experts / "base"), "--expert", f"fr={experts / 'fr'}",
                *_pairs("--train", files["train"]), "--out", str(run),
                "--max-steps", str(args.train_steps), "--batch-size", "16", "--block-size", "128", *preset,
                threads=args.threads)
        for agreement in ([False, True] if args.agreement else [False]):
            result_file = out / f"{run.name}{'-agreement' if agreement else ''}.json"
            command = ["eval", str(run), *_pairs("--data", files["report"]), *_pairs("--select", files["select"]),
                       "--json", str(result_file), *(["--agreement"] if agreement else [])]
            seconds, cpu_seconds = _superpose(*command, threads=args.threads)
            speed = json.loads(result_file.read_text())["throughput_tokens_per_s"]
            rows.append([label + (", --agreement" if agreement else ""), f"{seconds:.0f}", f"{cpu_seconds:.0f}",
                         "yes" if cpu_seconds < TARGET_SECONDS else "no", round(speed["base"]),
                         round(speed["superposed"]), f"{speed['superposed'] / speed['base']:.2f}",
                         round(speed["fixed_share:0.02"]), f"{speed['fixed_share:0.02'] / speed['base']:.2f}",
                         f"{train_seconds:.0f}"])
    sizes = sum(Path(p).stat().st_size for split in ("report", "select") for p in files[split].values())
    print(format_table(["run", "eval wall s", "eval CPU s", f"CPU < {TARGET_SECONDS} s", "base tok/s",
                        "superposed tok/s", "× base", "fixed_share:0.02 tok/s", "× base",
                        f"train s ({args.train_steps} steps)"], rows,
                       title=f"superpose eval, default baselines, 3 sets + 3 selection sets ({sizes / 1e3:.0f} KB "
                             f"of held-out files), 2 stacks"))
    print(f"command: superpose eval RUN {' '.join(_pairs('--data', files['report']))} "
          f"{' '.join(_pairs('--select', files['select']))}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}, {args.threads} torch thread(s); 1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (other jobs share the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
