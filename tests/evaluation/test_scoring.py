"""The one held-out scoring loop: every block once, token-weighted over the whole set, in the order asked."""
import math

import torch
from helpers import tiny_model

from superpose.evaluation.scoring import causal_lm, perplexities, scoring_batches
from superpose.training.blocks import LabelledBlocks


def _blocks() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, 90, (length,), generator=generator) for length in (31, 5, 17, 2, 24)]


def test_perplexity_is_token_weighted_over_the_whole_set_whatever_the_batch_size():
    """A float64 reference block by block: exp(Σ NLL / Σ predicted tokens). A mean of per-batch means would weigh
    the 2-token block like the 31-token one, and differ with the batch size."""
    model = tiny_model("gpt2").eval()
    blocks = _blocks()
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            log_probs = torch.log_softmax(model(block[None]).logits[0, :-1].double(), -1)
            nll -= float(log_probs.gather(-1, block[1:, None]).sum())
            tokens += block.numel() - 1
    for batch_size in (1, 2, 5):
        score = perplexities({"m": causal_lm(model)}, blocks, pad_id=0, batch_size=batch_size)["m"]
        assert score.total_tokens == tokens
        assert math.isclose(score.ppl, math.exp(nll / tokens), rel_tol=1e-4)


def test_batches_cover_the_rows_asked_for_in_order_with_their_domains():
    blocks = _blocks()
    labelled = LabelledBlocks(blocks, [0, 1, 0, 1, 1], ["base", "fr"])
    seen = []
    for rows, batch in scoring_batches(labelled, 2, 0, "cpu", rows=torch.tensor([4, 0, 3])):
        seen += rows
        assert batch.domains.tolist() == [labelled.domains[i] for i in rows]
        for row, ids, mask in zip(rows, batch.input_ids, batch.attention_mask):
            assert torch.equal(ids[mask.bool()], blocks[row])
    assert seen == [4, 0, 3]
    plain = [rows for rows, _ in scoring_batches(blocks, 2, 0, "cpu")]
    assert plain == [[0, 1], [2, 3], [4]]
