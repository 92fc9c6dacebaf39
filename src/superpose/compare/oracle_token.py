"""`oracle_token`: per token, the model that gave the observed token the highest probability (its whole
distribution is used at that position). It reads the answer: a lower bound below every per-sequence choice."""
from __future__ import annotations

import torch

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer, pick_per_token


class OracleTokenScorer(Scorer):
    reads_answer = True
    returns_log_probs = True

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> OracleTokenScorer:
        return cls()

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        logits, self.last_weights = pick_per_token(refs, refs.evidence().argmax(0))
        return logits

    def extra_seconds(self, refs: References) -> float:
        return refs.all_seconds()

    def stacks(self, models: int) -> float:
        return float(models)


METHOD = Method("oracle_token", OracleTokenScorer.build)
