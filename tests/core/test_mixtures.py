"""Causal output mixtures: Bayes and fixed share against slow per-token references."""
import math

import pytest
import torch

from superpose.core.mixtures import bayes_log_weights, fixed_share_log_weights, mix, scored_positions, token_log_probs


def _random_case(models=3, batch=2, length=9, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(models, batch, length, vocab, generator=g) * 2, dim=-1)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[-1, -3:] = -100  # right padding in the last row
    return log_probs, labels


def _slow_mixture(log_probs, labels, rate):
    """Per sequence, per position, with probabilities in float64: the textbook algorithm."""
    models, batch, length, _ = log_probs.shape
    p = log_probs.double().exp()
    out = torch.empty(batch, length, log_probs.shape[-1], dtype=torch.float64)
    for b in range(batch):
        w = torch.full((models,), 1.0 / models, dtype=torch.float64)
        for t in range(length):
            out[b, t] = (w[:, None] * p[:, b, t]).sum(0)
            if t + 1 < length and labels[b, t + 1] != -100:
                w = w * p[:, b, t, labels[b, t + 1]]
                w = w / w.sum()
                w = (1 - rate) * w + rate / models
    return out.log()


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.3])
def test_mixture_equals_the_per_token_reference(rate):
    log_probs, labels = _random_case()
    evidence = token_log_probs(log_probs, labels)
    weights = (bayes_log_weights(evidence) if rate == 0
               else fixed_share_log_weights(evidence, rate, scored_positions(labels)))
    got = mix(log_probs, weights)
    scored = torch.nn.functional.pad(labels[:, 1:] != -100, (1, 0), value=True)  # positions whose weights matter
    torch.testing.assert_close(got.double()[scored], _slow_mixture(log_probs, labels, rate)[scored], atol=1e-5, rtol=0)


def test_fixed_share_zero_is_bayes_and_one_model_is_that_model():
    log_probs, labels = _random_case()
    evidence = token_log_probs(log_probs, labels)
    torch.testing.assert_close(fixed_share_log_weights(evidence, 0.0), bayes_log_weights(evidence))
    single = log_probs[:1]
    one = token_log_probs(single, labels)
    torch.testing.assert_close(mix(single, bayes_log_weights(one)), single[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mix(single, fixed_share_log_weights(one, 0.1)), single[0], atol=1e-6, rtol=0)


def test_weights_at_t_ignore_tokens_after_t():
    log_probs, labels = _random_case(batch=1)
    changed = labels.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 7
    for fn in (bayes_log_weights, lambda e: fixed_share_log_weights(e, 0.1)):
        a = fn(token_log_probs(log_probs, labels))
        b = fn(token_log_probs(log_probs, changed))
        # position t predicts token t+1, so its weights may read labels up to t only
        torch.testing.assert_close(a[..., :5], b[..., :5])
        assert not torch.allclose(a[..., 5:], b[..., 5:])


def test_fixed_share_follows_a_switch_and_bayes_is_slow_to():
    # model 0 predicts the first half well, model 1 the second half
    length, vocab = 40, 5
    labels = torch.zeros(1, length, dtype=torch.long)
    labels[0, 20:] = 1
    log_probs = torch.full((2, 1, length, vocab), math.log(0.05))
    log_probs[0, :, :, 0] = math.log(0.8)
    log_probs[1, :, :, 1] = math.log(0.8)
    evidence = token_log_probs(log_probs, labels)
    share = fixed_share_log_weights(evidence, 0.02).exp()
    bayes = bayes_log_weights(evidence).exp()
    assert share[0, 0, 19] > 0.95 and share[1, 0, 24] > 0.9  # within a few tokens of the switch
    assert bayes[1, 0, 24] < 1e-6  # Bayes' evidence for model 0 takes as long to undo as it took to build
