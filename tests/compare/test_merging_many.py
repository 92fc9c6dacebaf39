"""Weight merges of several experts: every task vector counts, λ scales the merged one."""
import pytest
import torch

from superpose.compare import MERGE_METHODS
from superpose.compare.dare import dare
from superpose.compare.linear import linear
from superpose.compare.task_arithmetic import task_arithmetic
from superpose.compare.ties import ties


def _three(seed=0, size=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(size, generator=g), "step": torch.tensor(3)}
    experts = [{"w": base["w"] + 0.1 * torch.randn(size, generator=g), "step": torch.tensor(3)} for _ in range(2)]
    return base, experts


def test_task_arithmetic_sums_every_experts_task_vector():
    base, experts = _three()
    merged = task_arithmetic(base, experts, 0.7)["w"]
    expected = base["w"] + 0.7 * sum(e["w"] - base["w"] for e in experts)
    torch.testing.assert_close(merged, expected)


def test_dare_with_two_experts_at_density_one_is_task_arithmetic():
    base, experts = _three()
    torch.testing.assert_close(dare(base, experts, 1.0, seed=5, lam=0.6)["w"], task_arithmetic(base, experts, 0.6)["w"])


def test_ties_with_two_agreeing_experts_at_density_one_is_task_arithmetic_of_the_mean():
    # TIES averages the entries that agree with the elected sign (disjoint mean): without sign conflicts
    # and at density 1, it is task arithmetic with λ / N.
    base = {"w": torch.zeros(4)}
    experts = [{"w": torch.tensor([1.0, -2.0, 0.5, 3.0])}, {"w": torch.tensor([2.0, -1.0, 0.25, 1.0])}]
    torch.testing.assert_close(ties(base, experts, 1.0, lam=0.8)["w"], task_arithmetic(base, experts, 0.4)["w"])
    conflicting = [{"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([-3.0, -1.0])}]
    # with a conflict only the elected sign's entries count: (-3) alone, not 1 - 3
    torch.testing.assert_close(ties({"w": torch.zeros(2)}, conflicting, 1.0)["w"], torch.tensor([-3.0, -1.5]))


def test_registry_takes_every_expert_and_a_scale():
    base, experts = _three()
    torch.testing.assert_close(MERGE_METHODS["ties"](base, experts, (1.0, 0.5))["w"],
                               ties(base, experts, 1.0, 0.5)["w"])
    torch.testing.assert_close(MERGE_METHODS["dare"](base, experts, (0.5, 2.0), seed=1)["w"],
                               dare(base, experts, 0.5, 1, 2.0)["w"])
    torch.testing.assert_close(MERGE_METHODS["linear"](base, experts, 1.0)["w"],
                               (experts[0]["w"] + experts[1]["w"]) / 2)
    torch.testing.assert_close(linear(base, experts[0], 0.3)["w"],
                               MERGE_METHODS["linear"](base, [experts[0]], 0.3)["w"])
    with pytest.raises(ValueError, match="one expert"):
        MERGE_METHODS["slerp"](base, experts, 0.5)
    with pytest.raises(ValueError, match="one number"):
        MERGE_METHODS["linear"](base, experts, (0.5, 1.0))
