"""How the `dynamic` preset was chosen: short label-free runs scored on the *selection* halves only.

    python benchmarks/select_preset.py --corpus ../shared/corpus                       # the grid in BENCHMARKS.md
    python benchmarks/select_preset.py --corpus ../shared/corpus --gate-hidden 32 --switch-rates 0.2

Needs the paper part's experts (`python benchmarks/real_text.py --part paper`). Each run trains the dynamic preset
with the given gate width and switch rate, label-free on en/train.txt + fr/train.txt, then scores the first 80
blocks of each selection half and of the selection code-switched set; the oracle and `fixed_share:0.02` rows are
the scale, with the training-free `fixed_share_mix`. `benchmarks/ablate_gate.py` is the newer selection (the gate
over the rate mixture, with code as well as languages).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from halves import split_halves

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.core.metrics import LMScore
from superpose.core.mixtures import (
    fixed_share_log_weights,
    mix,
    rate_mixture_log_weights,
    scored_positions,
    token_log_probs,
)
from superpose.core.text_tables import format_table
from superpose.data.code_switch import load_spans, tokenize_spans
from superpose.data.text import load_texts, tokenize_blocks
from superpose.evaluation.scoring import scoring_batches
from superpose.model.superposed import SuperposedModel
from superpose.training.loop import UNLABELLED, train
from superpose.training.presets import preset_settings

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = 80


@torch.no_grad()
def ppl(score_batch, blocks: list[torch.Tensor]) -> float:
    score = LMScore()
    for _, batch in scoring_batches(blocks, 16, 0, "cpu"):
        score.update(score_batch(batch), batch.labels)
    return score.ppl


def output_mixture(models: list[torch.nn.Module], rate: float | None):
    """`fixed_share:rate`, or with None the rate mixture `fixed_share_mix`."""
    def score_batch(batch):
        log_probs = torch.stack([m(batch.input_ids, attention_mask=batch.attention_mask).logits.log_softmax(-1)
                                 for m in models])
        evidence, observed = token_log_probs(log_probs, batch.labels), scored_positions(batch.labels)
        weights = (rate_mixture_log_weights(evidence, observed=observed) if rate is None else
                   fixed_share_log_weights(evidence, rate, observed))
        return mix(log_probs, weights)
    return score_batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "full"))
    parser.add_argument("--gate-hidden", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--switch-rates", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.2, 0.3])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, corpus = Path(args.out), Path(args.corpus)
    experts = out / "experts"
    if not (experts / "fr" / "config.json").is_file():
        print("run `python benchmarks/real_text.py --part paper` first (it builds the experts)", file=sys.stderr)
        return 2
    files = split_halves(corpus, out / "data")
    tokenizer = load_tokenizer(str(experts / "base"))
    sets = {name: tokenize_blocks(load_texts(files["select"][name]), tokenizer, 128, BLOCKS) for name in ("base", "fr")}
    sets["switch"] = tokenize_spans(load_spans(files["select"]["switch"]), tokenizer, 128, BLOCKS).blocks
    models = [load_causal_lm(str(experts / "base")), load_causal_lm(str(experts / "fr"))]
    alone = [lambda b, m=m: m(b.input_ids, attention_mask=b.attention_mask).logits for m in models]
    rows = [["oracle (per language)", ppl(alone[0], sets["base"]), ppl(alone[1], sets["fr"]), float("nan"), 0],
            ["fixed_share:0.02", *[ppl(output_mixture(models, 0.02), sets[n]) for n in ("base", "fr", "switch")], 0],
            ["fixed_share_mix", *[ppl(output_mixture(models, None), sets[n]) for n in ("base", "fr", "switch")], 0]]
    unlabelled = {UNLABELLED: files["train"]["base"], f"{UNLABELLED}:2": files["train"]["fr"]}
    for hidden in args.gate_hidden:
        for rate in args.switch_rates:
            model_settings, train_settings = preset_settings("dynamic")
            model_settings = replace(model_settings, gate_hidden=hidden)
            train_settings = replace(train_settings, switch_rate=rate, max_steps=args.steps, batch_size=16,
                                     block_size=128, seed=0, max_valid_blocks=4, device="cpu")
            torch.manual_seed(0)
            model = SuperposedModel.from_models(models[0], {"fr": models[1]}, model_settings)
            run_dir = out / "select_preset" / f"hidden{hidden}_switch{rate}"
            shutil.rmtree(run_dir, ignore_errors=True)
            tick = time.perf_counter()
            train(model, tokenizer, unlabelled, None, run_dir, train_settings, progress=False)
            model.eval()
            scored = [ppl(lambda b: model(b.input_ids, attention_mask=b.attention_mask).logits, sets[n])
                      for n in ("base", "fr", "switch")]
            rows.append([f"gate_hidden {hidden}, switch_rate {rate}", *scored, time.perf_counter() - tick])
            print(rows[-1], flush=True)
    print(format_table(["run", "English", "French", "code-switched", "seconds"], rows,
                       title=f"selection halves, {args.steps} steps x 16 x 128, label-free, dynamic preset"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
