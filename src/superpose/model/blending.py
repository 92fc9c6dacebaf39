"""Blend weights: for layer l and position t, weights w[l, t] over the M stacks that sum to 1.

Every way of computing them lives here, behind `Blend`:

* static (the paper's): a B-spline over depth. With one expert it is exactly the paper's alpha, w = (1 - alpha,
  alpha); with several experts each stack has its own spline and a softmax runs across stacks.
* token: w[l, t] = softmax(prior_l + g_l(features_t)), where prior_l is the static spline's log-weights (so an
  untrained gate, whose last layer starts at zero, is the static model) and g_l reads only position t: the
  running state before layer l and, optionally, each stack's fixed-share log-posteriors over the tokens seen
  so far (`evidence.py`); one row of them (the middle rate's, or the rate mixture's) also enters directly,
  scaled by a learned per-layer factor that starts at 1, so an untrained gate with evidence is the prior times
  that posterior.
* token gate over the rate mixture (`gate_evidence: fixed_share_mix`): the gate's weights then enter the rate
  mixture as one more filter (`evidence.gated_rate_mixture`), weighted by how well they predicted the sequence so
  far. The prior starts uniform, so the untrained model *is* the training-free rate mixture; a trained gate takes
  over where it predicts better and fades where it predicts worse.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import BSpline
from torch import nn

from superpose.model.evidence import GateEvidence, evidence_rows, gated_rate_mixture


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


class SplineSoftmax(nn.Module):
    """Several experts: one spline per stack over depth, then a softmax across the M stacks.

    1d: one logit per stack and layer; 2d: a vector over the hidden size (no rounding: a softmax over more
    than two stacks has no grid of 0.1 steps that sums to 1).
    """

    def __init__(self, n_layers: int, hidden_size: int, n_stacks: int, variant: str = "1d", n_control: int = 16,
                 degree: int = 3):
        super().__init__()
        self.register_buffer("basis", bspline_basis(n_layers, n_control, degree), persistent=False)
        shape = (n_stacks,) if variant == "1d" else (n_stacks, hidden_size)
        self.variant = variant
        self.control = nn.Parameter(torch.randn(n_control, *shape) * (0.01 if variant == "1d" else 0.1))
        self.layer_bias = nn.Parameter(torch.zeros(n_layers, *shape))

    def logits(self) -> torch.Tensor:
        """(L, M) or (L, M, d) log-weights up to a constant per layer."""
        mixed = torch.einsum("li,i...->l...", self.basis, self.control)
        return mixed + 0.1 * self.layer_bias

    def forward(self) -> torch.Tensor:
        return torch.softmax(self.logits(), dim=1)

    def regularisation(self) -> torch.Tensor:
        if self.variant == "1d":
            return self.control.new_zeros(())
        return Alpha2D.regularisation(self)

    @torch.no_grad()
    def set_stack(self, index: int) -> None:
        """All weight on stack `index` at every layer (exactly: the others' softmax terms underflow to 0)."""
        self.control.zero_()
        self.layer_bias.fill_(-1e4)
        self.layer_bias[:, index] = 0.0


def _static_weights(spline: nn.Module) -> torch.Tensor:
    """(L, M) or (L, M, d) weights of a static spline; one expert: (1 - alpha, alpha)."""
    if isinstance(spline, SplineSoftmax):
        return spline()
    a = spline()
    return torch.stack([1 - a, a], dim=1)


class TokenGate(nn.Module):
    """g_l(features_t) per layer: LayerNorm of the state (+ evidence) -> linear or a small MLP -> M logits.

    The output layer starts at zero, so an untrained gate without evidence adds nothing to the prior; with
    evidence, the direct evidence scale starts at 1, so it weights the stacks by prior x the evidence's posterior.
    """

    FEATURE_FLOOR = -20.0  # rate mixture: log-weights below this read as this (a sure Bayes filter's -1000)

    def __init__(self, n_layers: int, hidden_size: int, n_stacks: int, hidden: int = 0, evidence: str = "none"):
        super().__init__()
        rows, self.direct_row = evidence_rows(evidence) if evidence != "none" else (0, None)
        # the rate mixture also shows the posterior over its rates: how often this text has switched so far
        extra = n_stacks * rows + (rows - 1 if evidence == "fixed_share_mix" else 0)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(n_layers))
        self.nets = nn.ModuleList(self._net(hidden_size + extra, n_stacks, hidden) for _ in range(n_layers))
        # 1: an untrained gate weights the stacks by prior x fixed-share posterior, the causal mixture it must beat
        self.evidence_scale = nn.Parameter(torch.ones(n_layers)) if rows else None
        self.rate_mixture = evidence == "fixed_share_mix"  # the gate then competes with the rate filters

    @staticmethod
    def _net(width: int, n_stacks: int, hidden: int) -> nn.Module:
        out = nn.Linear(hidden or width, n_stacks)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        return out if not hidden else nn.Sequential(nn.Linear(width, hidden), nn.GELU(), out)

    def forward(self, layer: int, state: torch.Tensor, evidence: GateEvidence | None) -> torch.Tensor:
        """state (B, T, d), evidence (B, T, R, M) log-posteriors or None -> (B, T, M) logits added to the prior;
        one row of the evidence also enters directly, scaled."""
        features = self.norms[layer](state.float())
        if self.evidence_scale is None:
            return self.nets[layer](features)
        rows = evidence.rows.to(features.device, features.dtype)
        read = [features, rows.flatten(-2)]
        if self.rate_mixture:  # its Bayes filter (rate 0) reaches -1000: floor what the net reads
            rates = torch.log_softmax(evidence.seen.to(features.device, features.dtype), dim=-1)
            read = [features, rows.clamp(min=self.FEATURE_FLOOR).flatten(-2), rates.clamp(min=self.FEATURE_FLOOR)]
        return self.nets[layer](torch.cat(read, dim=-1)) + self.evidence_scale[layer] * rows[..., self.direct_row, :]


class Blend(nn.Module):
    """The one interface to blend weights: `weights(layer, state, evidence)` -> (B|1, T|1, M, 1|d)."""

    def __init__(self, settings, n_layers: int, hidden_size: int, n_stacks: int):
        super().__init__()
        if n_stacks == 2:
            alpha_class = {"1d": Alpha1D, "2d": Alpha2D}[settings.variant]
            self.spline = alpha_class(n_layers, hidden_size, settings.n_control_points, settings.spline_degree)
        else:
            self.spline = SplineSoftmax(n_layers, hidden_size, n_stacks, settings.variant, settings.n_control_points,
                                       settings.spline_degree)
        self.gate = None
        if settings.gate == "token":
            self.gate = TokenGate(n_layers, hidden_size, n_stacks, settings.gate_hidden, settings.gate_evidence)
            if settings.gate_evidence == "fixed_share_mix":
                self.set_uniform()  # so the untrained model is exactly the training-free rate mixture
        self.n_stacks = n_stacks
        # per layer, the last forward's gate-alone NLL when gates compete with the rate filters (a training term)
        self.own_nll: dict[int, torch.Tensor] = {}

    @property
    def uses_evidence(self) -> bool:
        return self.gate is not None and self.gate.evidence_scale is not None

    def static_weights(self) -> torch.Tensor:
        """(L, M) or (L, M, d) float32 weights of the prior, outside any autocast (small steps stay visible)."""
        with torch.autocast(self.spline.control.device.type, enabled=False):
            return _static_weights(self.spline)

    def prior_log_weights(self, static: torch.Tensor) -> torch.Tensor:
        # log 0 would give NaN gradients where a 1d alpha is clamped at 0 or 1
        return torch.log(static.clamp(min=1e-30))

    def weights(self, layer: int, static: torch.Tensor, state: torch.Tensor | None = None,
                evidence: GateEvidence | None = None) -> torch.Tensor:
        """Layer `layer`'s weights: (1, 1, M, k) for a static blend, (B, T, M, k) for a gate (k = 1 or d)."""
        prior = static[layer]  # (M,) or (M, d)
        prior = prior.unsqueeze(-1) if prior.dim() == 1 else prior  # (M, k)
        if self.gate is None:
            return prior[None, None]
        home = self.spline.control.device  # a device map may hand over states from another device
        with torch.autocast(state.device.type, enabled=False):
            logits = self.gate(layer, state.to(home), evidence)  # (B, T, M)
            prior_log = self.prior_log_weights(prior.to(logits.device))  # (M, k)
            if not self.gate.rate_mixture:
                return torch.softmax(prior_log[None, None] + logits.unsqueeze(-1), dim=2)
            # whole stacks compete with the filters: a 2d prior enters as its mean over the hidden size
            gate_log_w = torch.log_softmax(prior_log.mean(-1) + logits, dim=-1)  # (B, T, M)
            log_w, self.own_nll[layer] = gated_rate_mixture(evidence, gate_log_w, layer)
            return log_w.exp().unsqueeze(-1)

    def regularisation(self) -> torch.Tensor:
        return self.spline.regularisation()

    @torch.no_grad()
    def set_uniform(self) -> None:
        """Every layer's prior weights every stack alike."""
        if isinstance(self.spline, SplineSoftmax):
            self.spline.control.zero_()
            self.spline.layer_bias.zero_()
        else:
            self.spline.set_constant(0.5)

    def set_stack(self, index: int) -> None:
        """Force every layer's prior one-hot on stack `index` (a one-expert alpha: 0 or 1)."""
        if isinstance(self.spline, SplineSoftmax):
            self.spline.set_stack(index)
        elif isinstance(self.spline, Alpha1D):
            self.spline.set_constant(float(index))
        else:
            raise ValueError("a 2d one-expert alpha lives in [0.1, 1] and cannot be one-hot on the base")
