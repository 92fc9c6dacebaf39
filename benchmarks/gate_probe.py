"""Why a trained gate moves (or not): gradients, the evidence term against the net's own output, and what the
gate's content features can see. Reads saved runs; scores the selection halves only.

    python benchmarks/gate_probe.py --run benchmarks/out/full/ablate_gate/lang2/old-preset --group lang2
    python benchmarks/gate_probe.py --run RUN --group code2 --untrained   # the same settings before training

For the last layer's gate (the one the mixture head reads), per set:
* `|evidence|`: mean spread across stacks (max - min) of the direct evidence term, scale × log-posterior;
* `|net|`: the same spread of the net's output, which training moves;
* `grad gate`: norm of the LM loss's gradient on the gate's parameters (one batch of 16 blocks);
* `|w - r|`: mean total-variation distance between the gate's weights and the posterior responsibilities
  r_m ∝ w_m p_m(x): the signal that reaches the gate logits (0 where the gate already picks the stack that
  predicts the token);
* probe accuracy: a logistic regression (half the positions to fit, half to score) predicting which stack gives
  the next token the highest probability, from the evidence features alone, the content features (the LayerNorm
  of the state the gate reads) alone, and both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from ablate_gate import GROUPS
from halves import docs_halves, split_halves
from sklearn.linear_model import LogisticRegression

from superpose.core.loading import load_tokenizer
from superpose.core.mixtures import token_log_probs
from superpose.core.text_tables import format_table
from superpose.data.code_switch import load_spans, tokenize_spans
from superpose.data.text import collate, load_texts, tokenize_blocks
from superpose.model.superposed import SuperposedModel

ROOT = Path(__file__).resolve().parent.parent


def _capture(model: SuperposedModel) -> dict:
    """Record the last layer's gate inputs and output on each forward."""
    last = model.config.num_hidden_layers - 1
    seen: dict = {}

    def hook(module, args, output):
        layer, state, evidence = args
        evidence = evidence.rows
        if layer == last:
            seen.update(features=module.norms[layer](state.float()).detach(), evidence=evidence.detach(),
                        net=(output - module.evidence_scale[layer] * evidence[..., module.direct_row, :]).detach(),
                        direct=(module.evidence_scale[layer] * evidence[..., module.direct_row, :]).detach())

    model.blend.gate.register_forward_hook(hook)
    return seen


def _spread(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x.amax(-1) - x.amin(-1))[mask].mean())


def probe(model: SuperposedModel, blocks: list[torch.Tensor]) -> dict:
    seen = _capture(model)
    batch = collate(blocks[:16], [0] * len(blocks[:16]), 0)
    model.zero_grad()
    out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, output_gates=True)
    out.loss.backward()
    grad = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.blend.gate.parameters() if p.grad is not None)))
    with torch.no_grad():
        own = torch.stack([torch.log_softmax(s(batch.input_ids, attention_mask=batch.attention_mask).logits.float(), -1)
                           for s in model.stack_models])  # (M, B, T, V)
        evidence = token_log_probs(own, batch.labels)  # (M, B, T): log p_m of the next token
        weights = out.gate_weights[-1].permute(2, 0, 1)  # (M, B, T)
        resp = torch.softmax(weights.clamp(min=1e-30).log() + evidence, dim=0)
        mask = torch.nn.functional.pad(batch.labels[:, 1:] != -100, (0, 1), value=False)
        tv = float((weights - resp).abs().sum(0)[mask].mean() / 2)
        target = evidence.argmax(0)[mask].numpy()
        ev = seen["evidence"].clamp(min=model.blend.gate.FEATURE_FLOOR).flatten(-2)[mask].numpy()
        content = seen["features"][mask].numpy()
    accuracy = {}
    half = len(target) // 2
    for name, x in (("evidence", ev), ("content", content), ("both", np.concatenate([ev, content], 1))):
        if len(set(target[:half])) < 2:
            accuracy[f"probe {name}"] = float("nan")
            continue
        fit = LogisticRegression(max_iter=500).fit(x[:half], target[:half])
        accuracy[f"probe {name}"] = float(fit.score(x[half:], target[half:]))
    return {"|evidence|": _spread(seen["direct"], mask), "|net|": _spread(seen["net"], mask), "grad gate": grad,
            "|w - r|": tv, "majority": float(max(np.mean(target[half:] == k) for k in set(target))), **accuracy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a saved run with a token gate that reads evidence")
    parser.add_argument("--group", choices=list(GROUPS), required=True)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "full"))
    parser.add_argument("--untrained", action="store_true", help="the run's settings with freshly initialised parts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = SuperposedModel.from_pretrained(args.run)
    if args.untrained:
        torch.manual_seed(0)
        model = SuperposedModel(model.config, model.base, dict(model.experts))
    if model.blend.gate is None or model.blend.gate.evidence_scale is None:
        print("the run has no token gate with evidence", file=sys.stderr)
        return 2
    domains = GROUPS[args.group]
    files = split_halves(Path(args.corpus), Path(args.out) / "data", domains, "mixed_" + "_".join(domains.values()))
    if "code" in domains:
        docs_halves(Path(args.corpus), Path(args.out) / "data", files)
    tokenizer = load_tokenizer(args.run) if (Path(args.run) / "tokenizer.json").is_file() else \
        load_tokenizer(model.config.base_model)
    sets = {n: tokenize_blocks(load_texts(files["select"][n]), tokenizer, 128, 16) for n in domains}
    sets["switch"] = tokenize_spans(load_spans(files["select"]["switch"]), tokenizer, 128, 16).blocks
    if "docs" in files["select"]:
        sets["docs"] = tokenize_blocks(load_texts(files["select"]["docs"]), tokenizer, 128, 16)
    model.train()
    results = {name: probe(model, blocks) for name, blocks in sets.items()}
    columns = list(next(iter(results.values())))
    print(format_table(["set", *columns], [[name, *r.values()] for name, r in results.items()],
                       title=f"last layer's gate, {'untrained' if args.untrained else 'trained'}: {args.run}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
