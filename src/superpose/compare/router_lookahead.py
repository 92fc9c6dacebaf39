"""`router_lookahead`: the `router`'s classifier reads the whole sequence before choosing one model for all
of it. Like an oracle it sees the tokens it scores, so it is an optimistic bound, not a usable model."""
from __future__ import annotations

import time

import numpy as np
import torch

from superpose.compare.common import Method, References, pick_per_token
from superpose.compare.router import ClassifierRouter, bags


class RouterLookaheadScorer(ClassifierRouter):
    reads_answer = True
    _share: np.ndarray | None = None

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        start = time.perf_counter()
        blocks = [row[mask.bool()] for row, mask in zip(input_ids.cpu(), attention_mask.cpu())]
        choice = torch.as_tensor(self.classifier.predict(bags(blocks, self.vocab_size)), device=input_ids.device)
        self._share = np.bincount(choice.cpu().numpy(), minlength=len(refs.logits)) / len(blocks)
        self._seconds = time.perf_counter() - start
        logits, self.last_weights = pick_per_token(refs, choice[:, None].expand_as(input_ids))
        return logits

    def extra_seconds(self, refs: References) -> float:
        # only the chosen model runs for each sequence
        return self._seconds + sum(share * refs.seconds[name] for share, name in zip(self._share, refs.names))


METHOD = Method("router_lookahead", RouterLookaheadScorer.build)
