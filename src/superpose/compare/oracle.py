"""`oracle`: one model per sequence, a bound that reads the answer. On a labelled set it is the set's own
model; on an unlabelled set, the model with the lowest loss on that sequence in hindsight. No real method can
match it: it shows how far switching could go."""
from __future__ import annotations

import torch

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer, pick_per_token


class OracleScorer(Scorer):
    reads_answer = True

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> OracleScorer:
        return cls()

    def _choice(self, refs: References) -> torch.Tensor:
        """(B,) model index per sequence."""
        batch = refs.labels.shape[0]
        if refs.domain is not None:
            return torch.full((batch,), refs.names.index(refs.domain), device=refs.labels.device)
        return refs.evidence().sum(-1).argmax(0)  # (B,): highest log-likelihood of the whole sequence

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        self._last = self._choice(refs)
        choice = self._last[:, None].expand(-1, refs.labels.shape[1])
        logits, self.last_weights = pick_per_token(refs, choice)
        # a labelled set is scored by its own model: exactly that model's logits
        return refs.logits[refs.domain] if refs.domain is not None else logits

    def extra_seconds(self, refs: References) -> float:
        chosen = [refs.names[i] for i in self._last.tolist()]
        return sum(refs.seconds[name] for name in chosen) / max(len(chosen), 1)


METHOD = Method("oracle", OracleScorer.build)
