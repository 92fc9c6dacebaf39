"""`fixed_share_mix`: the Bayesian mixture over fixed-share filters at a grid of rates, checked against a direct
float64 loop over positions."""

import pytest
import torch
from helpers import VOCAB, char_tokenizer, tiny_model

from superpose.compare import BaselineContext, References, build_scorer, label, parse_baselines
from superpose.core.mixtures import RATE_GRID


def _direct(probs: list[torch.Tensor], ids: torch.Tensor, rates, observed: torch.Tensor) -> torch.Tensor:
    """(B, T, V) log-probs of the rate mixture, one position at a time, in float64."""
    models, (batch, length, _) = len(probs), probs[0].shape
    out = torch.empty(batch, length, probs[0].shape[-1], dtype=torch.float64)
    for b in range(batch):
        filters = [torch.full((models,), 1.0 / models, dtype=torch.float64) for _ in rates]
        beta = torch.full((len(rates),), 1.0 / len(rates), dtype=torch.float64)
        for t in range(length):
            weights = sum(beta[k] * filters[k] for k in range(len(rates)))
            out[b, t] = torch.log(sum(weights[m] * probs[m][b, t] for m in range(models)))
            if t + 1 == length or not observed[b, t]:
                continue
            p_next = torch.stack([probs[m][b, t, ids[b, t + 1]] for m in range(models)])
            beta = beta * torch.stack([(f * p_next).sum() for f in filters])
            beta = beta / beta.sum()
            for k, rate in enumerate(rates):
                updated = filters[k] * p_next / (filters[k] * p_next).sum()
                filters[k] = (1 - rate) * updated + rate / models
    return out


@pytest.fixture(scope="module")
def three():
    return {name: tiny_model("gpt2", seed, init=0.5) for seed, name in enumerate(["base", "fr", "de"])}


@pytest.mark.parametrize("rates", [None, (0.001, 0.01, 0.1), (0.0,), (0.3,)])
def test_the_rate_mixture_equals_a_direct_float64_loop(three, rates):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 40), generator=generator)
    labels = ids.clone()
    labels[2, 30:] = -100  # a padded row: its tail adds no evidence
    with torch.no_grad():
        logits = {name: model(ids).logits for name, model in three.items()}
    refs = References(logits, {name: 0.0 for name in logits}, labels, None)
    scorer = build_scorer("fixed_share_mix", rates, BaselineContext(three, char_tokenizer()))
    got = scorer.logits(ids, None, refs)
    probs = [torch.softmax(x.double(), -1) for x in logits.values()]
    observed = torch.nn.functional.pad(labels[:, 1:] != -100, (0, 1), value=False)
    expected = _direct(probs, ids, rates or RATE_GRID, observed)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(scorer.last_weights.sum(0), torch.ones(3, 40), atol=1e-5, rtol=0)


def test_one_rate_is_that_fixed_share_mixture(three):
    ids = torch.randint(1, VOCAB, (2, 25), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = {name: model(ids).logits for name, model in three.items()}
    refs = References(logits, {name: 0.0 for name in logits}, ids.clone(), None)
    context = BaselineContext(three, char_tokenizer())
    alone = build_scorer("fixed_share_mix", (0.05,), context).logits(ids, None, refs)
    torch.testing.assert_close(alone, build_scorer("fixed_share", 0.05, context).logits(ids, None, refs))


def test_the_grid_is_one_setting_on_the_command_line():
    sweeps = parse_baselines(["fixed_share_mix", "fixed_share_mix:0.001,0.01,0.1"])
    assert sweeps == {"fixed_share_mix": [None, (0.001, 0.01, 0.1)]}
    assert label("fixed_share_mix", None) == "fixed_share_mix"
    assert label("fixed_share_mix", (0.001, 0.01, 0.1)) == "fixed_share_mix:0.001,0.01,0.1"
    assert "fixed_share_mix" in parse_baselines(None)
    for bad in ("fixed_share_mix:0.1,x", "fixed_share_mix:1.5", "fixed_share_mix:,"):
        with pytest.raises(ValueError, match="rates in \\[0, 1\\]"):
            parse_baselines([bad])
    assert RATE_GRID == (0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2)  # the default grid, as documented
