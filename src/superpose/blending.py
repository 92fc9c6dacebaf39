"""Per-layer blending coefficients alpha(l) from a clamped cubic B-spline (SPEC §2)."""
from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import BSpline
from torch import nn


def clamped_knots(n_control: int, degree: int) -> np.ndarray:
    """k zeros, a uniform interior, k ones: length n_control + degree + 1."""
    interior = np.linspace(0.0, 1.0, n_control + degree + 1 - 2 * degree)
    return np.concatenate([np.zeros(degree), interior, np.ones(degree)])


def bspline_basis(n_layers: int, n_control: int = 16, degree: int = 3) -> torch.Tensor:
    """Basis matrix B (n_layers, n_control) with B[l, i] = B_{i,k}(x_l), x_l = linspace(0, 1, n_layers).

    scipy evaluates the right end x = 1 inside the last non-empty knot span, so every row sums to 1.
    """
    if n_control <= degree:
        raise ValueError(f"need more control points ({n_control}) than the spline degree ({degree})")
    x = np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(1)
    basis = BSpline.design_matrix(x, clamped_knots(n_control, degree), degree).toarray()
    return torch.tensor(basis, dtype=torch.float32)


class Alpha1D(nn.Module):
    """One scalar per layer: alpha(l) = clamp(B c + 0.1 b, 0, 1)."""

    def __init__(self, n_layers: int, hidden_size: int, n_control: int = 16, degree: int = 3):
        super().__init__()
        self.register_buffer("basis", bspline_basis(n_layers, n_control, degree), persistent=False)
        self.control = nn.Parameter(torch.empty(n_control).uniform_(0.45, 0.55))
        self.layer_bias = nn.Parameter(torch.zeros(n_layers))

    def forward(self) -> torch.Tensor:
        """(L,) coefficients; 0 keeps the base's state, 1 the expert's."""
        return (self.basis @ self.control + 0.1 * self.layer_bias).clamp(0.0, 1.0)

    def regularisation(self) -> torch.Tensor:
        return self.control.new_zeros(())

    @torch.no_grad()
    def set_constant(self, value: float) -> None:
        """alpha(l) = value at every layer (rows of the basis sum to 1)."""
        self.control.fill_(value)
        self.layer_bias.zero_()


class Alpha2D(nn.Module):
    """One vector per layer over the hidden size, quantised to steps of 0.1 with a straight-through gradient."""

    def __init__(self, n_layers: int, hidden_size: int, n_control: int = 16, degree: int = 3):
        super().__init__()
        self.register_buffer("basis", bspline_basis(n_layers, n_control, degree), persistent=False)
        self.control = nn.Parameter(torch.randn(n_control, hidden_size) * 0.1)
        self.layer_bias = nn.Parameter(torch.randn(n_layers, hidden_size))

    def forward(self) -> torch.Tensor:
        """(L, d) coefficients in {0.1, 0.2, ..., 1.0}."""
        raw = 0.1 + 0.9 * torch.sigmoid(self.basis @ self.control + 0.01 * self.layer_bias)  # (L, d)
        rounded = torch.round(raw * 10.0) / 10.0
        return raw + (rounded - raw).detach()

    def regularisation(self) -> torch.Tensor:
        """Smooth, central control points; layer biases with small mean and variance near 0.02."""
        smooth = (self.control[1:] - self.control[:-1]).pow(2).mean()
        central = self.control.pow(2).mean()
        mean_bias = self.layer_bias.mean().pow(2)
        var_bias = (self.layer_bias.var() - 0.02).pow(2)
        return 0.1 * smooth + 0.1 * central + 0.05 * (0.75 * mean_bias + 0.25 * var_bias)

    @torch.no_grad()
    def set_constant(self, value: float) -> None:
        """alpha = value everywhere; 2D alpha lives in [0.1, 1], so values are clipped to that range."""
        fraction = min(max((value - 0.1) / 0.9, 1e-6), 1 - 1e-6)
        self.control.fill_(float(np.log(fraction / (1 - fraction))))
        self.layer_bias.zero_()


ALPHA_VARIANTS: dict[str, type[nn.Module]] = {"1d": Alpha1D, "2d": Alpha2D}
