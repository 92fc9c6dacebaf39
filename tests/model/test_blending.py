import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from superpose.model.blending import Alpha1D, Alpha2D, bspline_basis, clamped_knots


@pytest.mark.parametrize("layers", [2, 6, 12, 32])
def test_basis_rows_sum_to_one_and_match_scipy(layers):
    basis = bspline_basis(layers, 16, 3).double().numpy()
    assert np.allclose(basis.sum(1), 1.0, atol=1e-6)
    knots = clamped_knots(16, 3)
    assert len(knots) == 16 + 3 + 1
    x = np.linspace(0, 1, layers)
    for i in range(16):
        coefficients = np.zeros(16)
        coefficients[i] = 1.0
        # scipy's BSpline object (not its design matrix) as the independent reference; x = 1 included
        expected = BSpline(knots, coefficients, 3, extrapolate=True)(x)
        assert np.allclose(basis[:, i], expected, atol=1e-6), f"basis function {i}"


def test_alpha_ranges_and_quantisation():
    a1 = Alpha1D(12, 32)()
    assert a1.shape == (12,) and bool(((a1 >= 0.45) & (a1 <= 0.55)).all())
    alpha2 = Alpha2D(12, 32)
    a2 = alpha2()
    assert a2.shape == (12, 32)
    assert torch.allclose(a2 * 10, torch.round(a2 * 10), atol=1e-5)  # steps of 0.1
    assert bool(((a2 >= 0.1 - 1e-6) & (a2 <= 1 + 1e-6)).all())


def test_2d_straight_through_gradient_reaches_control_points():
    alpha = Alpha2D(6, 8)
    alpha().sum().backward()
    assert alpha.control.grad is not None and alpha.control.grad.abs().sum() > 0


def test_2d_regularisation_is_the_spec_formula_on_known_control_points():
    alpha = Alpha2D(4, 3, n_control=5)
    control = np.arange(15, dtype=np.float64).reshape(5, 3) ** 1.5 / 20  # uneven steps: smoothness is not trivial
    bias = np.array([[0.3, -0.1, 0.2], [0.5, 0.0, -0.4], [0.1, 0.25, 0.05], [-0.2, 0.6, 0.35]])
    with torch.no_grad():
        alpha.control.copy_(torch.tensor(control))
        alpha.layer_bias.copy_(torch.tensor(bias))
    # the paper's regulariser: 0.1*smooth + 0.1*central + 0.05*(0.75*meanbias + 0.25*varbias); var as torch's (unbiased)
    smooth = np.mean((control[1:] - control[:-1]) ** 2)
    central = np.mean(control**2)
    mean_bias = np.mean(bias) ** 2
    var_bias = (np.var(bias, ddof=1) - 0.02) ** 2
    expected = 0.1 * smooth + 0.1 * central + 0.05 * (0.75 * mean_bias + 0.25 * var_bias)
    assert alpha.regularisation().item() == pytest.approx(expected, rel=1e-6)
    assert Alpha1D(4, 3).regularisation().item() == 0.0  # the paper: the 1D variant has no alpha regulariser


def test_set_constant():
    alpha = Alpha1D(6, 8)
    alpha.set_constant(0.3)
    assert torch.allclose(alpha(), torch.full((6,), 0.3))
    alpha2 = Alpha2D(6, 8)
    alpha2.set_constant(1.0)
    assert torch.allclose(alpha2(), torch.ones(6, 8))
