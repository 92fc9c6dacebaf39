"""Each domain scored by its own expert: the lower bound any switching method can hope for."""
from __future__ import annotations

from .common import BaselineContext, References, Scorer


class OracleScorer(Scorer):
    @classmethod
    def build(cls, context: BaselineContext, method_and_parameter) -> "OracleScorer":
        return cls()

    def logits(self, input_ids, attention_mask, refs: References):
        return refs.base_logits if refs.domain == "base" else refs.expert_logits

    def extra_seconds(self, refs: References) -> float:
        return refs.base_seconds if refs.domain == "base" else refs.expert_seconds
