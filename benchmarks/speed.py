"""Speed of the superposed model next to its base, measured in one run (ratios, not absolute claims).

    python benchmarks/speed.py [--layers 4 --hidden 128 --threads 1]

Random-weight GPT-2-shaped models (speed does not depend on the weights). Prints one table:
forward tokens/s, generation tokens/s with and without the KV cache, and training step time.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from superpose import SuperposedModel, preset_settings
from superpose.core.text_tables import format_table
from superpose.data.text import collate
from superpose.training.losses import compute_losses
from superpose.training.step import make_optimizer


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary size (default 4096)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward (default 8)")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=max(1, args.hidden // 32),
                        vocab_size=args.vocab, n_positions=max(256, args.length + args.new_tokens + 16))
    base, expert, third = (GPT2LMHeadModel(config).eval() for _ in range(3))
    dynamic, _ = preset_settings("dynamic")
    paper, paper_train = preset_settings("paper")
    models = {
        "base alone": base,
        "superposed 1d, no AE": SuperposedModel.from_models(base, expert, replace(paper, ae_layers=[])).eval(),
        "superposed 1d": SuperposedModel.from_models(base, expert, replace(paper, variant="1d")).eval(),
        "superposed 2d": SuperposedModel.from_models(base, expert, replace(paper, variant="2d")).eval(),
        "dynamic preset, 2 stacks": SuperposedModel.from_models(base, expert, dynamic).eval(),
        "dynamic preset, 3 stacks": SuperposedModel.from_models(base, {"x": expert, "y": third}, dynamic).eval(),
        "dynamic, sequential graph, 2 stacks": SuperposedModel.from_models(
            base, expert, replace(dynamic, graph="sequential")).eval(),
        # the other gate evidence than the preset's: three fixed-share rates, or the rate mixture over seven
        **{f"dynamic, {other} evidence, {m} stacks": SuperposedModel.from_models(
            base, {"x": expert, "y": third} if m == 3 else expert, replace(dynamic, gate_evidence=other)).eval()
           for other in ["fixed_share", "fixed_share_mix"] if other != dynamic.gate_evidence for m in (2, 3)},
    }
    ids = torch.randint(0, args.vocab, (args.batch, args.length))
    prompt = ids[:1, :16]
    rows = []
    reference = {}
    for name, model in models.items():
        with torch.no_grad():
            forward = _best_of(lambda: model(ids), args.repeats)
            def gen(cache):
                return model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                      do_sample=False, use_cache=cache, pad_token_id=0)
            cached = _best_of(lambda: gen(True), args.repeats)
            uncached = _best_of(lambda: gen(False), 1)
        forward_tps = ids.numel() / forward
        cached_tps, uncached_tps = args.new_tokens / cached, args.new_tokens / uncached
        reference = reference or {"forward": forward_tps, "cached": cached_tps}
        step = float("nan")
        if isinstance(model, SuperposedModel):
            train_settings = preset_settings("dynamic")[1] if model.blend.gate is not None else paper_train
            settings = replace(train_settings, batch_size=args.batch, block_size=args.length).resolved(
                model.settings.variant)
            optimizer = make_optimizer(model, settings)
            batch = collate(list(ids), [i % 2 for i in range(args.batch)])

            def train_step():
                model.train()
                loss = compute_losses(model, batch, settings)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step = _best_of(train_step, args.repeats)
            model.eval()
        rows.append([name, round(forward_tps), f"{forward_tps / reference['forward']:.2f}", round(cached_tps, 1),
                     f"{cached_tps / reference['cached']:.2f}", round(uncached_tps, 1),
                     f"{cached_tps / uncached_tps:.1f}", step if step != step else round(step * 1000)])
    print(format_table(
        ["model", "forward tok/s", "× base", "generate tok/s (cache)", "× base", "generate tok/s (no cache)",
         "cache speed-up", "train step ms"], rows,
        title=f"speed: GPT-2 shape {args.layers} layers × {args.hidden}, vocab {args.vocab}, batch {args.batch} × "
              f"{args.length} tokens, {args.new_tokens} new tokens, {args.threads} torch thread(s)"))


if __name__ == "__main__":
    main()
