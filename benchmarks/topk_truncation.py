"""What `distill --top-k K` truncation costs: the teacher's mass in its top K tokens and the student's KL to the
teacher over the full vocabulary against over the K + 1 outcomes the cached loss sees.

    python benchmarks/topk_truncation.py --run out/full/dynamic/runs/dynamic_1-experts_labelled \
        --student out/full/one_stack/2-stacks/distill_all-weights --data out/full/data/en_report.txt \
        --data out/full/data/fr_report.txt

(run from `benchmarks/` after `real_text.py --part one-stack`). Uses the first `--blocks` blocks of each file.
"""
from __future__ import annotations

import argparse

import torch

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.core.text_tables import format_table
from superpose.data.text import load_texts, tokenize_blocks
from superpose.model.superposed import SuperposedModel
from superpose.training.distill import teacher_kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="the superposed teacher's run folder")
    parser.add_argument("--student", required=True, help="a one-stack checkpoint (e.g. a distill output)")
    parser.add_argument("--data", action="append", required=True, help="held-out text file (repeatable)")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per file (default 8)")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(args.run)
    teacher = SuperposedModel.from_pretrained(args.run).eval()
    student = load_causal_lm(args.student).eval()
    blocks = [b for path in args.data
              for b in tokenize_blocks(load_texts(path), tokenizer, args.block_size, args.blocks)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for k in args.k:
        m = teacher_kl(teacher, student, blocks, pad_id, top_k=k)
        rows.append([k, 100 * (1 - m["rest_mass"]), m["kl_full"], m["kl_topk"], m["kl_full"] - m["kl_topk"],
                     m["tokens"]])
    print(format_table(["k", "kept mass %", "KL full", "KL k+1", "not seen", "tokens"], rows,
                       title=f"top-k truncation: teacher {args.run}, student {args.student}"))


if __name__ == "__main__":
    main()
