"""Per-sequence router: a bag-of-tokens logistic regression picks one expert, which alone scores the sequence.

It reads the whole sequence before choosing, so it is an optimistic router (like the oracle,
it is not causal); it is trained on the run's training files only.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from ..data import DataError, load_texts, tokenize_blocks
from .common import BaselineContext, References, Scorer


def _bags(blocks: list[torch.Tensor], vocab_size: int) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(b.numel(), i) for i, b in enumerate(blocks)])
    cols = np.concatenate([b.numpy() for b in blocks])
    counts = sparse.csr_matrix((np.ones_like(cols, dtype=np.float32), (rows, cols)), shape=(len(blocks), vocab_size))
    lengths = np.asarray(counts.sum(1)).ravel().clip(min=1)
    return sparse.diags(1.0 / lengths) @ counts  # token frequencies: length does not matter


class RouterScorer(Scorer):
    def __init__(self, classifier: LogisticRegression, vocab_size: int, expert_index: int):
        self.classifier, self.vocab_size, self.expert_index = classifier, vocab_size, expert_index
        self._last_choice: np.ndarray | None = None
        self._seconds = 0.0

    @classmethod
    def build(cls, context: BaselineContext, method_and_parameter) -> "RouterScorer":
        names = ["base", context.expert_name]
        files = {k: v for k, v in context.train_files.items() if k in names}
        if set(files) != set(names):
            raise DataError(f"the router needs training files for both domains ({', '.join(names)}); the run has "
                            f"{', '.join(sorted(files)) or 'none'}")
        vocab = context.base.get_output_embeddings().weight.shape[0]
        blocks, labels = [], []
        for index, name in enumerate(names):
            domain_blocks = tokenize_blocks(load_texts(files[name]), context.tokenizer, 64, max_blocks=2000)
            blocks += domain_blocks
            labels += [index] * len(domain_blocks)
        classifier = LogisticRegression(max_iter=1000, C=10.0)
        classifier.fit(_bags(blocks, vocab), np.array(labels))
        return cls(classifier, vocab, 1)

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        start = time.perf_counter()
        blocks = [row[mask.bool()] for row, mask in zip(input_ids.cpu(), attention_mask.cpu())]
        choice = self.classifier.predict(_bags(blocks, self.vocab_size))  # (B,) 0 = base, 1 = expert
        self._last_choice = choice
        self._seconds = time.perf_counter() - start
        pick_expert = torch.as_tensor(choice == self.expert_index, device=refs.base_logits.device).view(-1, 1, 1)
        return torch.where(pick_expert, refs.expert_logits, refs.base_logits)

    def extra_seconds(self, refs: References) -> float:
        # only the chosen expert runs for each sequence
        share = float(np.mean(self._last_choice == self.expert_index)) if self._last_choice is not None else 0.5
        return self._seconds + (1 - share) * refs.base_seconds + share * refs.expert_seconds
