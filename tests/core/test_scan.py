"""The vectorised fixed-share scan equals the step-by-step update it replaces."""
import math

import pytest
import torch

from superpose.core.mixtures import fixed_share_scan


def loop_scan(evidence, rate, observed, state=None):
    """The reference: one Bayes update and one share per position, in a Python loop (the former implementation)."""
    models, _, length = evidence.shape
    rate = torch.as_tensor(rate, dtype=evidence.dtype)
    keep, share = torch.log1p(-rate), torch.log(rate / models)
    log_w = state if state is not None else torch.full_like(evidence[:, :, 0], -math.log(models))
    out = []
    for t in range(length):
        posterior = torch.log_softmax(log_w + evidence[:, :, t], dim=0)
        mixed = torch.logaddexp(posterior + keep, share.expand_as(posterior))
        log_w = torch.where(observed[None, :, t], mixed, log_w)
        out.append(log_w)
    return torch.stack(out, dim=-1), log_w


def _case(models, columns, length, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    evidence = -torch.rand(models, columns, length, generator=g, dtype=dtype) * 12  # log-likelihoods of tokens
    observed = torch.rand(columns, length, generator=g) > 0.25
    observed[0, :5] = False  # a left-padded row: its first positions carry no evidence
    evidence = evidence.masked_fill(~observed[None], 0.0)
    return evidence, observed


@pytest.mark.parametrize("models", [2, 3, 5])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 133])
def test_vectorised_scan_equals_the_loop(models, length):
    ("""Every position, at several rates as one batch (rate 0 = Bayes and 1 = forget all included): within 1e-6
    of the float64 loop, in float64 and in float32 (whose own loop drifts further: Bayes log-weights reach
    -hundreds, where a float32 step is 1e-5, and the float32 inputs are already rounded, """
     """so float32 is held to 5e-6 relative).""")
    rates = torch.tensor([0.0, 0.002, 0.02, 0.2, 1.0, 0.5], dtype=torch.float64)
    evidence, observed = _case(models, len(rates), length, seed=models * 100 + length, dtype=torch.float64)
    slow, slow_last = loop_scan(evidence, rates, observed)
    for dtype, rtol in ((torch.float64, 0.0), (torch.float32, 5e-6)):
        fast, fast_last = fixed_share_scan(evidence.to(dtype), rates.to(dtype), observed)
        assert fast.dtype == dtype and fast.shape == slow.shape
        torch.testing.assert_close(fast.double(), slow, atol=1e-6, rtol=rtol)
        torch.testing.assert_close(fast_last.double(), slow_last, atol=1e-6, rtol=rtol)


def test_vectorised_scan_continues_from_a_carried_state():
    """Scanning a sequence in chunks, carrying the last weights, equals scanning it whole (and the loop)."""
    evidence, observed = _case(3, 4, 50, seed=7, dtype=torch.float64)
    whole, last = fixed_share_scan(evidence, 0.05, observed)
    state, parts = None, []
    for lo, hi in ((0, 1), (1, 17), (17, 18), (18, 50)):
        part, state = fixed_share_scan(evidence[:, :, lo:hi], 0.05, observed[:, lo:hi], state)
        parts.append(part)
        ref, ref_state = loop_scan(evidence[:, :, lo:hi], 0.05, observed[:, lo:hi],
                                   None if lo == 0 else parts[-2][:, :, -1])
        torch.testing.assert_close(part, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(state, last, atol=1e-6, rtol=0)


def test_positions_without_evidence_keep_the_weights():
    """Padding leaves the weights alone: a fully masked prefix keeps the starting (uniform or carried) state."""
    evidence, observed = _case(2, 3, 12, seed=3, dtype=torch.float64)
    observed[:, :4] = False
    evidence[:, :, :4] = 0.0
    state = torch.log_softmax(torch.randn(2, 3, dtype=torch.float64), dim=0)
    fast, _ = fixed_share_scan(evidence, 0.1, observed, state)
    torch.testing.assert_close(fast[:, :, :4], state[:, :, None].expand(-1, -1, 4), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast, loop_scan(evidence, 0.1, observed, state)[0], atol=1e-6, rtol=0)
