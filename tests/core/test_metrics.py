"""Tests for the streamed LM metrics in superpose.core.metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from superpose.core.metrics import (
    IGNORE_INDEX,
    DistributionAgreement,
    LMScore,
    average_log_probs,
    cosine_similarity_of_distributions,
    js_divergence,
)

V = 11


def _batch(seed: int, lengths: list[int], t: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (B, t, V) and right-padded labels (B, t) with the given real lengths."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(len(lengths), t, V, generator=gen)
    labels = torch.randint(0, V, (len(lengths), t), generator=gen)
    for row, length in enumerate(lengths):
        labels[row, length:] = IGNORE_INDEX
    return logits, labels


def _reference_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
    """Independent per-sequence NLL sum / token count / argmax hits, via cross_entropy(sum)."""
    nll, tokens, correct = 0.0, 0, 0
    for row in range(logits.shape[0]):
        pred, target = logits[row, :-1], labels[row, 1:]
        keep = target != IGNORE_INDEX
        nll += F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="sum").item()
        tokens += int(keep.sum())
        correct += int((pred.argmax(-1)[keep] == target[keep]).sum())
    return nll, tokens, correct


def test_ppl_is_token_weighted_not_mean_of_means():
    logits, labels = _batch(0, lengths=[9, 3])  # 8 and 2 scored tokens
    score = LMScore()
    score.update(logits, labels)

    nll, tokens, correct = _reference_sums(logits, labels)
    assert score.tokens == tokens == 10
    assert score.ppl == pytest.approx(math.exp(nll / tokens), rel=1e-6)
    assert score.nll == pytest.approx(nll / tokens, rel=1e-6)
    assert score.accuracy == pytest.approx(correct / tokens)

    per_seq = []
    for row in range(2):
        pred, target = logits[row, :-1], labels[row, 1:]
        per_seq.append(F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX).item())
    mean_of_means = sum(per_seq) / len(per_seq)
    assert abs(mean_of_means - nll / tokens) > 1e-3  # the two definitions genuinely differ here
    assert score.ppl != pytest.approx(math.exp(mean_of_means), rel=1e-4)


def test_padding_is_excluded():
    logits, labels = _batch(1, lengths=[5, 7])
    score = LMScore()
    score.update(logits, labels)
    garbage = logits.clone()
    garbage[0, 5:] = 1e4 * torch.randn_like(garbage[0, 5:])  # positions predicting padding
    other = LMScore()
    other.update(garbage, labels)
    assert other.as_dict() == pytest.approx(score.as_dict())


def test_streaming_equals_one_big_batch():
    a_logits, a_labels = _batch(2, lengths=[9, 4, 6])
    b_logits, b_labels = _batch(3, lengths=[2, 9])
    streamed = LMScore()
    streamed.update(a_logits, a_labels)
    streamed.update(b_logits, b_labels)
    whole = LMScore()
    whole.update(torch.cat([a_logits, b_logits]), torch.cat([a_labels, b_labels]))
    assert streamed.tokens == whole.tokens
    assert streamed.as_dict() == pytest.approx(whole.as_dict(), rel=1e-9)
    assert set(whole.as_dict()) == {"ppl", "accuracy", "tokens", "nll"}


def test_accuracy_of_perfect_predictor():
    labels = torch.tensor([[4, 1, 2, 3, IGNORE_INDEX]])
    logits = torch.full((1, 5, V), -5.0)
    for pos in range(4):
        logits[0, pos, labels[0, pos + 1].clamp(min=0)] = 5.0
    score = LMScore()
    score.update(logits, labels)
    assert score.tokens == 3
    assert score.accuracy == 1.0


def test_empty_and_bad_shapes_raise():
    with pytest.raises(ValueError):
        _ = LMScore().ppl
    with pytest.raises(ValueError):
        LMScore().update(torch.zeros(2, 3, V), torch.zeros(2, 4, dtype=torch.long))


def _random_log_probs(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.log_softmax(2.0 * torch.randn(*shape, generator=gen), dim=-1)


def test_js_zero_for_identical_and_symmetric_and_bounded():
    logp, logq = _random_log_probs(0, (6, V)), _random_log_probs(1, (6, V))
    torch.testing.assert_close(js_divergence(logp, logp), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(js_divergence(logp, logq), js_divergence(logq, logp))
    jsd = js_divergence(logp, logq)
    assert jsd.shape == (6,)
    assert (jsd >= 0).all() and (jsd <= math.log(2)).all() and (jsd > 0).all()


def test_js_matches_definition():
    logp, logq = _random_log_probs(2, (4, V)), _random_log_probs(3, (4, V))
    p, q = logp.exp().double(), logq.exp().double()
    m = 0.5 * (p + q)
    expected = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    torch.testing.assert_close(js_divergence(logp, logq).double(), expected, atol=1e-6, rtol=1e-5)


def test_js_of_disjoint_one_hots_is_ln2():
    p = torch.zeros(V)
    p[0] = 1.0
    q = torch.zeros(V)
    q[1] = 1.0
    jsd = js_divergence(p.log(), q.log())
    assert torch.isfinite(jsd)
    assert jsd.item() == pytest.approx(math.log(2), abs=1e-6)
    # near-one-hot distributions from huge logits approach the bound too
    near = js_divergence(F.log_softmax(50 * p, -1), F.log_softmax(50 * q, -1))
    assert near.item() == pytest.approx(math.log(2), abs=1e-6)


def test_cosine_of_distributions():
    logp, logq = _random_log_probs(4, (5, V)), _random_log_probs(5, (5, V))
    torch.testing.assert_close(cosine_similarity_of_distributions(logp, logp), torch.ones(5))
    cos = cosine_similarity_of_distributions(logp, logq)
    assert ((cos >= 0) & (cos < 1)).all()


def test_average_log_probs_is_log_of_mixture():
    logp, logq = _random_log_probs(6, (3, V)), _random_log_probs(7, (3, V))
    mix = average_log_probs(logp, logq)
    torch.testing.assert_close(mix.exp(), 0.5 * (logp.exp() + logq.exp()))
    torch.testing.assert_close(mix.exp().sum(-1), torch.ones(3))
    # zero-probability entries stay finite where the other distribution has mass
    one_hot = torch.zeros(V)
    one_hot[0] = 1.0
    mixed = average_log_probs(one_hot.log(), torch.full((V,), 1.0 / V).log())
    assert torch.isfinite(mixed).all()


def test_distribution_agreement_streams_over_unmasked_positions():
    a_model, a_labels = _batch(8, lengths=[9, 4])
    a_ref, _ = _batch(9, lengths=[9, 4])
    b_model, b_labels = _batch(10, lengths=[3, 9])
    b_ref, _ = _batch(11, lengths=[3, 9])

    streamed = DistributionAgreement()
    streamed.update(a_model, a_ref, a_labels)
    streamed.update(b_model, b_ref, b_labels)

    js_vals, cos_vals = [], []
    for model, ref, labels in ((a_model, a_ref, a_labels), (b_model, b_ref, b_labels)):
        keep = labels[:, 1:] != IGNORE_INDEX
        logp = F.log_softmax(model[:, :-1], -1)[keep]
        logq = F.log_softmax(ref[:, :-1], -1)[keep]
        js_vals.append(js_divergence(logp, logq))
        cos_vals.append(cosine_similarity_of_distributions(logp, logq))
    js_all, cos_all = torch.cat(js_vals), torch.cat(cos_vals)

    assert streamed.tokens == js_all.numel() == 8 + 3 + 2 + 8
    assert streamed.js == pytest.approx(js_all.mean().item(), rel=1e-5)
    assert streamed.cosine == pytest.approx(cos_all.mean().item(), rel=1e-5)
    assert 0 < streamed.js < math.log(2)


def test_distribution_agreement_self_and_log_prob_reference():
    logits, labels = _batch(12, lengths=[7, 9])
    same = DistributionAgreement()
    same.update(logits, logits, labels)
    assert same.js == pytest.approx(0.0, abs=1e-6)
    assert same.cosine == pytest.approx(1.0, abs=1e-6)

    # a reference given as log-probs (e.g. average_log_probs output) is accepted as-is
    other, _ = _batch(13, lengths=[7, 9])
    mix = average_log_probs(F.log_softmax(logits, -1), F.log_softmax(other, -1))
    via_logits = DistributionAgreement()
    via_logits.update(logits, torch.log(mix.exp()) + 3.0, labels)  # shifted logits, same softmax
    via_log_probs = DistributionAgreement()
    via_log_probs.update(logits, mix, labels)
    assert via_log_probs.as_dict() == pytest.approx(via_logits.as_dict(), rel=1e-5)
    assert 0 < via_log_probs.js < math.log(2)
