"""How confident each stack is off its own domain: perplexity at a few softmax temperatures, per selection set.

    python benchmarks/temperature_probe.py --corpus ../shared/corpus --group code2

A mixture of the stacks' outputs can only pick, per token, a weighted average of what they predict. Where every
stack is off its domain (package READMEs for a novels base and a Python expert) a flatter distribution may score
better than any weighting of the sharp ones: that gap is calibration, which no blend weights can close. Each row
divides every logit of one stack (or of the training-free `fixed_share_mix`'s stacks) by T and scores the first 80
blocks of each selection half. The last rows are causal and need no selection: `fixed_share_mix`'s output seen at
each temperature of a grid, and those versions mixed by another rate mixture, which learns the temperature as it
reads (`superpose.model.calibration`, with a prior weight on T = 1); the model's default grid and prior were chosen
among them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ablate_gate import BLOCKS, GROUPS
from halves import docs_halves, split_halves
from select_preset import output_mixture, ppl

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.core.text_tables import format_table
from superpose.data.code_switch import load_spans, tokenize_spans
from superpose.data.text import load_texts, tokenize_blocks
from superpose.model.calibration import temperature_mixture

ROOT = Path(__file__).resolve().parent.parent
TEMPERATURES = (0.9, 1.0, 1.1, 1.25, 1.5)


class Tempered(torch.nn.Module):
    """A causal LM whose logits are divided by `temperature`."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, input_ids, attention_mask=None):
        out = self.model(input_ids, attention_mask=attention_mask)
        out.logits = out.logits / self.temperature
        return out


# (grid, prior weight of T = 1): the uniform prior over a wide grid, and a narrow grid at two priors
CANDIDATES = (((0.9, 1.0, 1.1, 1.25, 1.5), 1 / 5), ((0.9, 1.0, 1.25), 1 / 3), ((0.9, 1.0, 1.25), 2 / 3))


def tempered_mixture(score_batch, grid: tuple[float, ...], stay_prior: float):
    """`score_batch`'s output read at every temperature of `grid`, mixed causally as the model does."""
    def scored(batch):
        return temperature_mixture(score_batch(batch), batch.input_ids, batch.attention_mask, list(grid),
                                   stay_prior=stay_prior)
    return scored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "full"))
    parser.add_argument("--group", choices=list(GROUPS), default="code2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, domains = Path(args.out), GROUPS[args.group]
    experts = out / "experts"
    files = split_halves(Path(args.corpus), out / "data", domains, "mixed_" + "_".join(domains.values()))
    if "code" in domains:
        docs_halves(Path(args.corpus), out / "data", files)
    tokenizer = load_tokenizer(str(experts / "base"))
    sets = {n: tokenize_blocks(load_texts(files["select"][n]), tokenizer, 128, BLOCKS) for n in domains}
    sets["switch"] = tokenize_spans(load_spans(files["select"]["switch"]), tokenizer, 128, BLOCKS).blocks
    if "docs" in files["select"]:
        sets["docs"] = tokenize_blocks(load_texts(files["select"]["docs"]), tokenizer, 128, BLOCKS)
    models = {n: load_causal_lm(str(experts / n)).eval() for n in domains}
    rows = []
    with torch.no_grad():
        for temperature in TEMPERATURES:
            tempered = {n: Tempered(m, temperature) for n, m in models.items()}
            for name, model in tempered.items():
                score = lambda b, m=model: m(b.input_ids, attention_mask=b.attention_mask).logits  # noqa: E731
                rows.append([f"{name} stack", temperature, *[ppl(score, blocks) for blocks in sets.values()]])
            mixture = output_mixture(list(tempered.values()), None)
            rows.append(["fixed_share_mix", temperature, *[ppl(mixture, blocks) for blocks in sets.values()]])
            print(rows[-1], flush=True)
        yardstick = output_mixture(list(models.values()), None)
        for grid, stay in CANDIDATES:
            mixture = tempered_mixture(yardstick, grid, stay)
            rows.append([f"fixed_share_mix, then a rate mixture over T (prior {stay:.2f} on 1)",
                         ",".join(f"{t:g}" for t in grid), *[ppl(mixture, blocks) for blocks in sets.values()]])
    rows.sort(key=lambda row: (row[0], str(row[1])))
    print(format_table(["model", "T", *sets], rows,
                       title=f"selection halves, {args.group}: perplexity with every logit divided by T"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
