"""`router`: a bag-of-tokens logistic regression, trained on the run's training files, picks one model at each
position from the prefix alone.

At position t it picks the model its classifier prefers for the prefix x_≤t, and that model's prediction
scores token t+1. Switching stacks inside a sequence needs the new stack's cache of the prefix, so it is
charged every stack's compute. `router_lookahead` is the same classifier reading the whole sequence.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer, pick_per_token
from superpose.data.text import DataError, load_texts, tokenize_blocks


def bags(blocks: list[torch.Tensor], vocab_size: int) -> sparse.csr_matrix:
    """Each block's token frequencies (length does not matter), one row per block."""
    rows = np.concatenate([np.full(b.numel(), i) for i, b in enumerate(blocks)])
    cols = np.concatenate([b.numpy() for b in blocks])
    counts = sparse.csr_matrix((np.ones_like(cols, dtype=np.float32), (rows, cols)), shape=(len(blocks), vocab_size))
    lengths = np.asarray(counts.sum(1)).ravel().clip(min=1)
    return sparse.diags(1.0 / lengths) @ counts


def train_classifier(context: BaselineContext) -> tuple[LogisticRegression, int]:
    """A classifier over the models (class i = i-th model of the context) from each model's training file."""
    names = list(context.models)
    missing = [name for name in names if name not in context.train_files]
    if missing:
        raise DataError(f"the routers need a training file for every model ({', '.join(names)}); the run has none "
                        f"for {', '.join(missing)}")
    vocab = context.base.get_output_embeddings().weight.shape[0]
    blocks, labels = [], []
    for index, name in enumerate(names):
        domain_blocks = tokenize_blocks(load_texts(context.train_files[name]), context.tokenizer, 64, max_blocks=2000)
        blocks += domain_blocks
        labels += [index] * len(domain_blocks)
    classifier = LogisticRegression(max_iter=1000, C=10.0)
    classifier.fit(bags(blocks, vocab), np.array(labels))
    return classifier, vocab


class ClassifierRouter(Scorer):
    """A scorer that picks models with a classifier trained on the run's training files."""

    returns_log_probs = True  # the chosen model's log-probs at each position

    def __init__(self, classifier: LogisticRegression, vocab_size: int):
        self.classifier, self.vocab_size = classifier, vocab_size
        self._seconds = 0.0

    @classmethod
    def build(cls, context: BaselineContext, point: Point):
        return cls(*context.shared("router classifier", lambda: train_classifier(context)))  # router and lookahead


class RouterScorer(ClassifierRouter):
    def prefix_choice(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) the classifier's choice for each prefix x_≤t, from running sums of per-token coefficients.

        A logistic regression on token frequencies scores a prefix as intercept + Σ_{i≤t} coef[x_i] / (t+1).
        """
        coef = torch.as_tensor(self.classifier.coef_, dtype=torch.float64, device=input_ids.device)  # (C', V)
        intercept = torch.as_tensor(self.classifier.intercept_, dtype=torch.float64, device=input_ids.device)
        mask = attention_mask.to(torch.float64)  # (B, T)
        per_token = coef[:, input_ids] * mask  # (C', B, T)
        counts = mask.cumsum(-1).clamp(min=1)  # (B, T)
        scores = per_token.cumsum(-1) / counts + intercept[:, None, None]  # (C', B, T)
        if scores.shape[0] == 1:  # binary: one decision function for class 1 against class 0
            scores = torch.cat([torch.zeros_like(scores), scores])
        classes = torch.as_tensor(self.classifier.classes_, device=input_ids.device)
        return classes[scores.argmax(0)]

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        start = time.perf_counter()
        choice = self.prefix_choice(input_ids, attention_mask)
        self._seconds = time.perf_counter() - start
        logits, self.last_weights = pick_per_token(refs, choice)
        return logits

    def extra_seconds(self, refs: References) -> float:
        return self._seconds + refs.all_seconds()  # switching stacks mid-sequence needs every stack's cache

    def stacks(self, models: int) -> float:
        return float(models)


METHOD = Method("router", RouterScorer.build)
