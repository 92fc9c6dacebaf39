"""The weight merges (one file each in superpose.compare) and the registry entries that sweep them."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from superpose.compare import MERGE_METHODS, REGISTRY, BaselineContext, build_scorer
from superpose.compare.dare import dare
from superpose.compare.linear import linear
from superpose.compare.slerp import slerp
from superpose.compare.task_arithmetic import task_arithmetic
from superpose.compare.ties import ties


def _tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def base_model() -> GPT2LMHeadModel:
    return _tiny_gpt2(0)


@pytest.fixture(scope="module")
def pair(base_model: GPT2LMHeadModel) -> tuple[dict, dict]:
    """Base and a 'fine-tune' that differs everywhere except one frozen LayerNorm."""
    base_sd = {k: v.clone() for k, v in base_model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    expert_sd = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base_sd.items()}
    expert_sd["transformer.ln_f.weight"] = base_sd["transformer.ln_f.weight"].clone()
    return base_sd, expert_sd


def _assert_sd_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_sd_close(a: dict, b: dict, **tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **tol, msg=lambda m, k=key: f"{k}: {m}")


def test_linear_endpoints_exact(pair):
    base_sd, expert_sd = pair
    _assert_sd_equal(linear(base_sd, expert_sd, 0.0), base_sd)
    _assert_sd_equal(linear(base_sd, expert_sd, 1.0), expert_sd)


def test_linear_midpoint(pair):
    base_sd, expert_sd = pair
    merged = linear(base_sd, expert_sd, 0.5)
    _assert_sd_close(merged, {k: (base_sd[k] + expert_sd[k]) / 2 for k in base_sd})


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 1.5])
def test_task_arithmetic_equals_linear(pair, lam):
    base_sd, expert_sd = pair
    _assert_sd_close(task_arithmetic(base_sd, expert_sd, lam), linear(base_sd, expert_sd, lam))


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_ties_and_dare_full_density_are_task_arithmetic(pair, lam):
    base_sd, expert_sd = pair
    expected = task_arithmetic(base_sd, expert_sd, lam)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT's density>=1 warning must be silenced
        _assert_sd_close(ties(base_sd, expert_sd, 1.0, lam=lam), expected)
        _assert_sd_close(dare(base_sd, expert_sd, 1.0, seed=3, lam=lam), expected)


def test_ties_trims_to_top_magnitudes():
    base = {"w": torch.zeros(10)}
    tau = torch.tensor([5.0, -4.0, 0.1, 0.2, -0.3, 3.0, 0.0, 0.05, -6.0, 1.0])
    merged = ties(base, {"w": tau}, density=0.4)["w"]
    expected = torch.tensor([5.0, -4.0, 0, 0, 0, 3.0, 0, 0, -6.0, 0])
    torch.testing.assert_close(merged, expected)


def test_ties_sign_election_with_two_experts():
    base = {"w": torch.zeros(3)}
    e1 = {"w": torch.tensor([2.0, -1.0, 1.0])}
    e2 = {"w": torch.tensor([-1.0, -3.0, 3.0])}
    merged = ties(base, [e1, e2], density=1.0)["w"]
    # entry 0: majority +, only 2.0 kept; entry 1: both −, mean −2; entry 2: both +, mean 2.
    torch.testing.assert_close(merged, torch.tensor([2.0, -2.0, 2.0]))


def test_dare_reproducible_and_seed_dependent(pair):
    base_sd, expert_sd = pair
    a = dare(base_sd, expert_sd, 0.5, seed=0)
    b = dare(base_sd, expert_sd, 0.5, seed=0)
    c = dare(base_sd, expert_sd, 0.5, seed=1)
    _assert_sd_equal(a, b)
    key = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(a[key], c[key])


def test_dare_drops_and_rescales_without_touching_global_rng():
    base = {"w": torch.zeros(10_000)}
    expert = {"w": torch.ones(10_000)}
    state = torch.get_rng_state()
    merged = dare(base, expert, density=0.25, seed=7)["w"]
    assert torch.equal(torch.get_rng_state(), state)
    kept = merged != 0
    torch.testing.assert_close(merged[kept], torch.full_like(merged[kept], 4.0))
    assert abs(kept.float().mean().item() - 0.25) < 0.03


def test_slerp_endpoints(pair):
    base_sd, expert_sd = pair
    _assert_sd_close(slerp(base_sd, expert_sd, 0.0), base_sd)
    _assert_sd_close(slerp(base_sd, expert_sd, 1.0), expert_sd)


def test_slerp_orthogonal_unit_vectors_stay_on_sphere():
    base = {"w": torch.tensor([1.0, 0.0, 0.0])}
    expert = {"w": torch.tensor([0.0, 1.0, 0.0])}
    mid = slerp(base, expert, 0.5)["w"]
    torch.testing.assert_close(mid.norm(), torch.tensor(1.0))
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2.0))
    # linear interpolation would shrink the norm to 1/sqrt(2)
    assert linear(base, expert, 0.5)["w"].norm() < 0.8


def test_slerp_falls_back_to_linear_when_degenerate():
    colinear = slerp({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([2.0, 4.0])}, 0.5)["w"]
    torch.testing.assert_close(colinear, torch.tensor([1.5, 3.0]))
    zero = slerp({"w": torch.zeros(2)}, {"w": torch.tensor([2.0, 4.0])}, 0.25)["w"]
    torch.testing.assert_close(zero, torch.tensor([0.5, 1.0]))


def test_non_float_and_identical_tensors_copied_from_base():
    base = {
        "count": torch.tensor([3, 4]),
        "mask": torch.tensor([True, False]),
        "frozen": torch.tensor([1.0, 2.0]),
        "w": torch.tensor([1.0, 1.0]),
    }
    expert = {
        "count": torch.tensor([9, 9]),
        "mask": torch.tensor([False, True]),
        "frozen": torch.tensor([1.0, 2.0]),
        "w": torch.tensor([3.0, 3.0]),
    }
    for name, fn in MERGE_METHODS.items():
        merged = fn(base, expert, 0.5, seed=0)
        assert torch.equal(merged["count"], base["count"]), name
        assert torch.equal(merged["mask"], base["mask"]), name
        assert torch.equal(merged["frozen"], base["frozen"]), name
        assert merged["frozen"].data_ptr() != base["frozen"].data_ptr(), name  # a copy, not an alias


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes_preserved(dtype):
    base = {"w": torch.randn(4, 4).to(dtype)}
    expert = {"w": torch.randn(4, 4).to(dtype)}
    for name, fn in MERGE_METHODS.items():
        assert fn(base, expert, 0.5, seed=0)["w"].dtype == dtype, name


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_bad_density_raises(pair, density):
    base_sd, expert_sd = pair
    with pytest.raises(ValueError, match="density"):
        ties(base_sd, expert_sd, density)
    with pytest.raises(ValueError, match="density"):
        dare(base_sd, expert_sd, density, seed=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_coefficients_raise(pair, bad):
    base_sd, expert_sd = pair
    for fn in (linear, task_arithmetic, slerp):
        with pytest.raises(ValueError, match="finite"):
            fn(base_sd, expert_sd, bad)
    with pytest.raises(ValueError, match="finite"):
        ties(base_sd, expert_sd, 0.5, lam=bad)


def test_mismatched_keys_and_shapes_raise(pair):
    base_sd, expert_sd = pair
    missing = {k: v for k, v in expert_sd.items() if k != "transformer.h.1.ln_1.bias"}
    with pytest.raises(ValueError, match=r"transformer\.h\.1\.ln_1\.bias"):
        linear(base_sd, missing, 0.5)
    extra = dict(expert_sd, **{"extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"extra\.weight"):
        ties(base_sd, extra, 0.5)
    reshaped = dict(expert_sd)
    reshaped["transformer.wpe.weight"] = torch.zeros(31, 32)
    for _name, fn in MERGE_METHODS.items():
        with pytest.raises(ValueError, match=r"transformer\.wpe\.weight"):
            fn(base_sd, reshaped, 0.5, seed=0)


def test_every_method_loads_strict_and_runs(base_model, pair):
    base_sd, expert_sd = pair
    model = _tiny_gpt2(0)
    input_ids = torch.arange(8).unsqueeze(0)
    for name, fn in MERGE_METHODS.items():
        merged = fn(base_sd, expert_sd, 0.5, seed=0)
        model.load_state_dict(merged, strict=True)
        with torch.no_grad():
            logits = model(input_ids).logits
        assert torch.isfinite(logits).all(), name
    assert set(MERGE_METHODS) == {"linear", "task_arithmetic", "ties", "dare", "slerp"}
    assert all(REGISTRY[name].holds_model for name in MERGE_METHODS)


def test_merging_into_one_reused_model_equals_loading_the_whole_merged_state_dict():
    """Evaluation merges tensor by tensor into one scratch model; that must be the state-dict merge, exactly."""
    base, expert = _tiny_gpt2(0), _tiny_gpt2(1)  # GPT-2 ties its head to its embeddings
    context = BaselineContext({"base": base, "fr": expert}, tokenizer=None, seed=3)
    scratch, references = None, {}
    for name, fn in MERGE_METHODS.items():
        references[name] = _tiny_gpt2(2)
        references[name].load_state_dict(fn(base.state_dict(), expert.state_dict(), 0.4, seed=3), strict=True)
        scorer = build_scorer(name, 0.4, context, into=scratch)
        assert scratch is None or scorer.model is scratch  # the same model, overwritten: one alive at a time
        scratch = scorer.model
        assert scratch is not base and scratch is not expert
        _assert_sd_equal(scratch.state_dict(), references[name].state_dict())
    assert scratch.lm_head.weight is scratch.transformer.wte.weight  # still tied
    fresh = build_scorer("dare", 0.4, context).model  # without `into`: a copy of the base
    _assert_sd_equal(fresh.state_dict(), references["dare"].state_dict())
    _assert_sd_equal(base.state_dict(), _tiny_gpt2(0).state_dict())  # the base itself is untouched
