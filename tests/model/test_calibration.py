"""Output temperature mixture: a causal Bayesian mixture over temperatures, against a direct float64 reference; it
flattens an overconfident output as it reads, costs little on a calibrated one, and acts only in evaluation mode."""
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import paper_model, tiny_pair

from superpose.core.mixtures import RATE_GRID
from superpose.core.settings import SettingsError
from superpose.model.calibration import CACHE_KEY, STAY_PRIOR, temperature_mixture, temperature_prior
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel

TEMPERATURES = [0.9, 1.0, 1.25]


def reference(logits: torch.Tensor, ids: torch.Tensor, temperatures, rates=RATE_GRID) -> torch.Tensor:
    """Step by step in float64: per rate a fixed-share filter over the tempered outputs (starting at, and sharing
    to, the prior), the filters mixed by how well each predicted the tokens so far (uniform over rates)."""
    log_probs = torch.log_softmax(logits.double(), -1)
    versions = torch.stack([torch.log_softmax(log_probs / t, -1) for t in temperatures])  # (K, B, T, V)
    prior = temperature_prior(temperatures).exp()
    batch, length, _ = logits.shape
    out = torch.empty_like(log_probs)
    for b in range(batch):
        weights = [prior.clone() for _ in rates]
        seen = torch.zeros(len(rates), dtype=torch.float64)
        for t in range(length):
            if t > 0:  # x_t arrives, scored by what position t-1 predicted
                p = versions[:, b, t - 1, ids[b, t]].exp()  # (K,)
                for r, rate in enumerate(rates):
                    seen[r] += torch.log((weights[r] * p).sum())
                    posterior = weights[r] * p / (weights[r] * p).sum()
                    weights[r] = (1 - rate) * posterior + rate * prior
            beta = torch.softmax(seen, 0)
            mixed = sum(beta[r] * weights[r] for r in range(len(rates)))  # (K,)
            out[b, t] = torch.logsumexp(versions[:, b, t] + mixed.log()[:, None], 0)
    return out


def _data(seed: int = 0, batch: int = 2, length: int = 12, vocab: int = 9, sharp: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator) * 2
    ids = torch.multinomial(torch.softmax(logits.reshape(-1, vocab) / sharp, -1), 1, generator=generator)
    ids = ids.reshape(batch, length)
    return logits, torch.cat([ids[:, :1], ids[:, :-1]], dim=1)  # x_{t+1} drawn from position t's distribution


def test_the_mixture_matches_a_float64_step_by_step_reference():
    logits, ids = _data()
    got = temperature_mixture(logits, ids, None, TEMPERATURES)
    torch.testing.assert_close(got.double(), reference(logits, ids, TEMPERATURES), atol=1e-5, rtol=0)
    assert torch.allclose(got.exp().sum(-1), torch.ones(2, 12), atol=1e-5)  # a distribution at every position


def test_chunks_through_a_cache_give_the_whole_sequence():
    logits, ids = _data(seed=1)
    whole = temperature_mixture(logits, ids, None, TEMPERATURES)
    cache = SimpleNamespace(evidence={})
    parts = [temperature_mixture(logits[:, a:b], ids[:, a:b], None, TEMPERATURES, cache)
             for a, b in [(0, 5), (5, 6), (6, 12)]]
    assert CACHE_KEY in cache.evidence
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=0)


def _nll(log_probs: torch.Tensor, ids: torch.Tensor) -> float:
    return float(-log_probs[:, :-1].gather(-1, ids[:, 1:, None]).mean())


def test_an_overconfident_output_is_flattened_as_the_text_is_read():
    logits, ids = _data(seed=2, batch=4, length=200, sharp=1.25)  # the text is flatter than the model thinks
    plain = torch.log_softmax(logits, -1)
    mixed = temperature_mixture(logits, ids, None, TEMPERATURES)
    assert _nll(mixed, ids) < _nll(plain, ids) - 0.01
    later = mixed[:, -50:].exp()
    hotter = torch.softmax(logits[:, -50:] / 1.25, -1)
    assert (later - hotter).abs().sum(-1).mean() < (later - plain[:, -50:].exp()).abs().sum(-1).mean()


def test_a_calibrated_output_costs_at_most_the_prior_of_temperature_one():
    logits, ids = _data(seed=3, batch=4, length=200, sharp=1.0)
    plain = torch.log_softmax(logits, -1)
    mixed = temperature_mixture(logits, ids, None, TEMPERATURES)
    per_sequence = (_nll(mixed, ids) - _nll(plain, ids)) * 199
    assert per_sequence <= -math.log(STAY_PRIOR) + 1e-4


def test_the_prior_puts_two_thirds_on_temperature_one():
    prior = temperature_prior(TEMPERATURES).exp()
    assert prior.sum().item() == pytest.approx(1.0)
    assert prior[1].item() == pytest.approx(STAY_PRIOR)


def test_the_model_calibrates_in_evaluation_mode_only_and_old_runs_do_not():
    base, expert = tiny_pair()
    ids = torch.randint(0, 64, (2, 10))
    on = SuperposedModel.from_models(base, expert, ModelSettings(ae_layers=[]))
    off = SuperposedModel.from_models(base, expert, ModelSettings(ae_layers=[], output_temperatures=""))
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        trained_on, trained_off = on.train()(ids).logits, off.train()(ids).logits
        evaluated_on, evaluated_off = on.eval()(ids).logits, off.eval()(ids).logits
    torch.testing.assert_close(trained_on, trained_off)
    assert not torch.allclose(evaluated_on, evaluated_off, atol=1e-4)
    torch.testing.assert_close(evaluated_off, trained_off)
    kept = on(ids, logits_to_keep=3).logits
    torch.testing.assert_close(kept, evaluated_on[:, -3:], atol=1e-5, rtol=0)
    assert ModelSettings.from_saved({"head": "mixture"}).output_temperatures == []
    assert paper_model().output_temperatures == []


@pytest.mark.parametrize("bad", ["1", "0.9,1.25", "a", [0.0, 1.0], [float("inf"), 1.0]])
def test_bad_temperatures_are_refused_clearly(bad):
    with pytest.raises(SettingsError, match="output_temperatures"):
        ModelSettings(output_temperatures=bad)


def test_drafts_are_read_at_the_temperatures_the_cache_weighs_so_far():
    """A speculative draft is drawn from the drafter's output mixed over temperatures as the model's own last
    position was: for the model's own head output, exactly that position's calibrated output."""
    from superpose.model.calibration import as_read_so_far

    base, expert = tiny_pair()
    model = SuperposedModel.from_models(base, expert, ModelSettings(ae_layers=[])).eval()
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(4))
    cache = model.new_cache()
    with torch.no_grad():
        calibrated = model(ids, cache=cache, use_cache=True).logits[:, -1]
        model.settings.output_temperatures = []
        plain = torch.log_softmax(model(ids).logits[:, -1], -1)
        assert torch.equal(as_read_so_far(model, plain, cache), plain)  # not calibrating: unchanged
        model.settings.output_temperatures = TEMPERATURES
    assert not torch.allclose(calibrated, plain, atol=1e-4)
    torch.testing.assert_close(as_read_so_far(model, plain, cache), calibrated, atol=1e-5, rtol=0)
    assert torch.equal(as_read_so_far(model, plain, model.new_cache()), plain)  # nothing read yet: unchanged
