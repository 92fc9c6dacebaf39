"""Ablation of the dynamic gate on the *selection* halves: what each part adds over the training-free rate mixture.

    python benchmarks/ablate_gate.py --corpus ../shared/corpus --group code2          # English base + code expert
    python benchmarks/ablate_gate.py --corpus ../shared/corpus --group lang2 --variants mix-switch0.2 old-preset

Needs the benchmark's experts (`python benchmarks/real_text.py --part paper`, plus the code expert that
`--part dynamic` builds). Each variant trains at the same budget (default 200 steps × 16 × 128) on the group's
training files, then scores the first 80 blocks of each selection half, of the selection code-switched set and
(code groups) of the selection half of the package READMEs. The training-free rows (per-domain oracle,
`fixed_share_mix`) are the scale; ratios are to `fixed_share_mix`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from unittest import mock

import torch
from halves import docs_halves, split_halves
from select_preset import output_mixture, ppl

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.core.text_tables import format_table
from superpose.data.code_switch import load_spans, switched_blocks, tokenize_spans
from superpose.data.text import load_texts, tokenize_blocks
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel
from superpose.training import blocks as training_blocks
from superpose.training.loop import UNLABELLED, train
from superpose.training.presets import preset_settings

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = 80
GROUPS = {"lang2": {"base": "en", "fr": "fr"}, "code2": {"base": "en", "code": "code"},
          "lang3": {"base": "en", "fr": "fr", "de": "de"}, "code3": {"base": "en", "fr": "fr", "code": "code"}}
# name -> (model setting overrides, train setting overrides) on top of the current `dynamic` preset without its
# output temperatures (they act at inference only: `preset` adds them back); a third element True builds the
# switched blocks with `snippets` (code chunks cut to random runs of their lines)
VARIANTS = {
    "preset": (dict(output_temperatures=ModelSettings().output_temperatures), dict(switch_rate=0.2)),
    "old-preset": (dict(gate_evidence="fixed_share"), dict(switch_rate=0.2)),
    "mix-untrained": (dict(gate_evidence="fixed_share_mix"), None),  # must equal the fixed_share_mix row
    "mix-switch0": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.0)),
    "mix-switch0.2": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.2)),
    "mix-switch0.5": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.5)),
    "mix-switch0.2-nolabel-ce": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.2, gate_label_weight=0.0)),
    "mix-switch0.2-wide": (dict(gate_evidence="fixed_share_mix", gate_hidden=128), dict(switch_rate=0.2)),
    "mix-switch0.2-sequential": (dict(gate_evidence="fixed_share_mix", graph="sequential"), dict(switch_rate=0.2)),
    "mix-switch0.2-balanced": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.2, max_train_blocks=6000)),
    "snippets-switch0.2": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.2), True),
    "snippets-switch0.5": (dict(gate_evidence="fixed_share_mix"), dict(switch_rate=0.5), True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "full"))
    parser.add_argument("--group", choices=list(GROUPS), default="code2")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--label-free", action="store_true", help="train on the files without domain names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, corpus = Path(args.out), Path(args.corpus)
    experts, domains = out / "experts", GROUPS[args.group]
    missing = [n for n in domains if not (experts / n / "config.json").is_file()]
    if missing:
        print(f"missing experts {missing} under {experts}: run benchmarks/real_text.py first", file=sys.stderr)
        return 2
    files = split_halves(corpus, out / "data", domains, "mixed_" + "_".join(domains.values()))
    if "code" in domains:
        docs_halves(corpus, out / "data", files)
    tokenizer = load_tokenizer(str(experts / "base"))
    sets = {n: tokenize_blocks(load_texts(files["select"][n]), tokenizer, 128, BLOCKS) for n in domains}
    sets["switch"] = tokenize_spans(load_spans(files["select"]["switch"]), tokenizer, 128, BLOCKS).blocks
    if "docs" in files["select"]:
        sets["docs"] = tokenize_blocks(load_texts(files["select"]["docs"]), tokenizer, 128, BLOCKS)
    models = {n: load_causal_lm(str(experts / n)) for n in domains}
    alone = {n: (lambda b, m=m: m(b.input_ids, attention_mask=b.attention_mask).logits) for n, m in models.items()}
    yardstick = {s: ppl(output_mixture(list(models.values()), None), blocks) for s, blocks in sets.items()}
    rows = [["oracle (per domain)", *[ppl(alone[s], sets[s]) if s in alone else float("nan") for s in sets], 0, 0],
            ["fixed_share_mix", *yardstick.values(), 0, 0]]
    train_files = dict(files["train"]) if not args.label_free else {
        (UNLABELLED if i == 0 else f"{UNLABELLED}:{i + 1}"): p for i, p in enumerate(files["train"].values())}
    results = {}
    for name in args.variants:
        model_over, train_over, *snippets = VARIANTS[name]
        model_settings, train_settings = preset_settings("dynamic")
        model_settings = replace(model_settings, **{"output_temperatures": [], **model_over})
        train_settings = replace(train_settings, **{**dict(max_steps=args.steps, batch_size=16, block_size=128, seed=0,
                                                          max_valid_blocks=4, device="cpu"), **(train_over or {})})
        torch.manual_seed(0)
        model = SuperposedModel.from_models(models["base"], {n: models[n] for n in list(domains)[1:]}, model_settings)
        run_dir = out / "ablate_gate" / args.group / name
        shutil.rmtree(run_dir, ignore_errors=True)
        tick = time.perf_counter()
        speed = float("nan")
        builder = partial(switched_blocks, snippets=bool(snippets and snippets[0]))
        if train_over is not None:
            with mock.patch.object(training_blocks, "switched_blocks", builder):
                speed = train(model, tokenizer, train_files, None, run_dir, train_settings,
                              progress=False).throughput["tokens_per_second"]
        model.eval()
        scored = {s: ppl(lambda b: model(b.input_ids, attention_mask=b.attention_mask).logits, blocks)
                  for s, blocks in sets.items()}
        results[name] = scored
        rows.append([name, *[f"{v:.2f} ({v / yardstick[s]:.3f})" for s, v in scored.items()],
                     speed, time.perf_counter() - tick])
        print(rows[-1], flush=True)
    (out / "ablate_gate").mkdir(parents=True, exist_ok=True)
    (out / "ablate_gate" / f"{args.group}{'_label_free' if args.label_free else ''}.json").write_text(
        json.dumps({"yardstick": yardstick, "runs": results, "steps": args.steps}, indent=1))
    print(format_table(["variant", *sets, "train tok/s", "seconds"], rows,
                       title=f"selection halves, {args.group}, {args.steps} steps x 16 x 128, "
                             f"{'label-free' if args.label_free else 'labelled'}; (× fixed_share_mix)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
