"""`ModelSettings`: how the stacks are blended, validated at the edge and saved in every run's `config.json`.

The defaults are the `dynamic` preset's, what `superpose train` uses without `--preset`; `PAPER_MODEL` holds the
paper's values where they differ, which is also what a run saved without one of those keys was trained with.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from superpose.core.settings import (
    SettingsError,
    check_choices,
    check_positive,
    coerce_numbers,
    parse_boolean,
    setting,
    upgrade_values,
)

Variant = Literal["1d", "2d"]
ConvPadding = Literal["causal", "symmetric"]
EmbedBlend = Literal["mean_weights", "base"]
Head = Literal["base", "first_expert", "blend", "mixture"]
Gate = Literal["static", "token"]
GateEvidence = Literal["none", "fixed_share", "fixed_share_mix"]
Graph = Literal["sequential", "parallel"]
VARIANTS, HEADS, GATES = typing.get_args(Variant), typing.get_args(Head), typing.get_args(Gate)
GATE_EVIDENCE, GRAPHS = typing.get_args(GateEvidence), typing.get_args(Graph)

# Values from the two-model days: they still load (settings files, flags, saved runs), with a notice.
RENAMED_VALUES = {("head", "expert"): "first_expert", ("embed_blend", "mean_alpha"): "mean_weights"}

# The paper's values where the defaults (the dynamic preset's) differ; they were the defaults before, so a saved
# run that lacks one of these keys was trained with it.
PAPER_MODEL = {"ae_layers": None, "head": "base", "gate": "static", "gate_hidden": 0, "gate_evidence": "none",
               "graph": "sequential", "output_temperatures": []}


@dataclass
class ModelSettings:
    """How the stacks are blended; the defaults are the `dynamic` preset's (`PAPER_MODEL`: the paper's)."""

    variant: Variant = setting("1d", "1d: one alpha per layer + linear-conv AEs; 2d: an alpha vector per layer + "
                                     "dual-path AEs")
    ae_layers: list[int] | None = setting([], "comma-separated 0-based layers followed by an autoencoder ('' for "
                                              "none, the default; null in a config file scales the paper's 2..11 "
                                              "(1d) / 3..10 (2d) of 12, as the paper preset does)")
    bottleneck: float | None = setting(None, "autoencoder width / hidden size (default 0.75 for 1d, 0.65 for 2d)")
    conv_padding: ConvPadding = setting("causal", "symmetric reproduces the paper and leaks the next token")
    embed_blend: EmbedBlend = setting("mean_weights", "blend the stacks' embeddings with each stack's weight "
                                                      "averaged over layers (the paper's mean alpha), or use the "
                                                      "base's")
    head: Head = setting("mixture", "final norm + LM head: the base's (paper), the first expert's, all heads' logits "
                                    "blended by the mean weights, or mixture (default): the stacks' next-token "
                                    "probabilities mixed by the last layer's weights")
    gate: Gate = setting("token", "static: one blend per layer (the paper's spline); token (default): a causal "
                                  "per-token gate on top of the spline")
    gate_hidden: int = setting(32, "token gate: width of a hidden layer (default 32; 0 = LayerNorm + linear)")
    gate_evidence: GateEvidence = setting("fixed_share_mix", "token gate: also read each stack's fixed-share "
                                                             "log-posterior over the tokens seen so far: at three "
                                                             "rates around evidence_rate (fixed_share), or at a grid "
                                                             "of rates plus their Bayesian mixture, with which an "
                                                             "untrained gate starts (fixed_share_mix, the default); "
                                                             "none for a static gate")
    evidence_rate: float = setting(0.02, "fixed-share rate of the gate evidence; the gate also reads 0.1x and 10x "
                                         "this rate (default 0.02)")
    graph: Graph = setting("parallel", "sequential: the stacks share one running state (paper); parallel (default): "
                                       "each stack runs on its own states and the blends form a side path to the "
                                       "head")
    ae_residual: bool = setting(False, "autoencoders as h + AE(h) with the decoder starting at zero (an untrained "
                                       "model is the plain blend); off = the paper's form")
    output_temperatures: list[float] = setting([0.9, 1.0, 1.25], "at inference, read the output at these "
                                                                 "temperatures (one of them 1) and mix them as the "
                                                                 "text is read, so text no expert was trained on "
                                                                 "gets a flatter distribution ('' for none; default "
                                                                 "0.9,1,1.25)")
    n_control_points: int = setting(16, "B-spline control points of alpha (default 16)")
    spline_degree: int = setting(3, "B-spline degree (default 3)")

    @classmethod
    def from_saved(cls, values: dict | None) -> ModelSettings:
        """The settings a run saved (its config's `settings`); a key it lacks takes the paper's value, the default
        when it was saved."""
        return cls(**{**PAPER_MODEL, **(values or {})})

    def __post_init__(self) -> None:
        coerce_numbers(self)
        upgrade_values(self, RENAMED_VALUES)
        check_choices(self)
        if self.gate_evidence != "none" and self.gate != "token":
            raise SettingsError("gate_evidence needs gate: token (a static blend reads nothing of the input); "
                                "give gate_evidence: none with gate: static")
        if not isinstance(self.gate_hidden, int) or isinstance(self.gate_hidden, bool) or self.gate_hidden < 0:
            raise SettingsError(f"gate_hidden must be a non-negative integer; got {self.gate_hidden!r}")
        check_positive("evidence_rate", self.evidence_rate)
        if self.evidence_rate > 0.09:
            raise SettingsError(f"evidence_rate must be at most 0.09 (the gate also reads 10x this rate, which must "
                                f"stay below 1); got {self.evidence_rate!r}")
        if self.gate_hidden and self.gate != "token":
            raise SettingsError("gate_hidden sizes the token gate: it needs gate: token (give gate_hidden: 0 with "
                                "gate: static)")
        self.ae_residual = parse_boolean("ae_residual", self.ae_residual)
        if self.bottleneck is not None and not (isinstance(self.bottleneck, (int, float)) and 0 < self.bottleneck <= 4):
            raise SettingsError(f"bottleneck must be in (0, 4]; got {self.bottleneck!r}")
        if isinstance(self.ae_layers, str):
            self.ae_layers = _parse_int_list("ae_layers", self.ae_layers)
        if self.ae_layers is not None:
            if not isinstance(self.ae_layers, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.ae_layers):
                raise SettingsError(f"ae_layers must be non-negative layer indices; got {self.ae_layers!r}")
            self.ae_layers = sorted(set(self.ae_layers))
        self.output_temperatures = _temperatures(self.output_temperatures)
        if not isinstance(self.n_control_points, int) or not isinstance(self.spline_degree, int) \
                or self.spline_degree < 1 or self.n_control_points <= self.spline_degree:
            raise SettingsError("n_control_points must be an integer larger than spline_degree (>= 1)")

    def resolved_ae_layers(self, n_layers: int) -> list[int]:
        """The AE layers for a stack of `n_layers`; None keeps the paper's share of 12 layers."""
        if self.ae_layers is not None:
            bad = [i for i in self.ae_layers if i >= n_layers]
            if bad:
                raise SettingsError(f"ae_layers {bad} do not exist in a model of {n_layers} layers")
            return list(self.ae_layers)
        start, stop = (2, 12) if self.variant == "1d" else (3, 11)
        first = math.floor(start * n_layers / 12 + 0.5)
        last = math.floor(stop * n_layers / 12 + 0.5)
        return list(range(min(first, n_layers - 1), max(last, first + 1)))[: n_layers]

    def resolved_bottleneck(self) -> float:
        if self.bottleneck is not None:
            return self.bottleneck
        return 0.75 if self.variant == "1d" else 0.65


def _parse_int_list(name: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SettingsError(f"{name} expects comma-separated integers, got {text!r}") from None


def _temperatures(value) -> list[float]:
    """None or '' (none), a comma-separated string or a list -> sorted distinct temperatures, one of them 1."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise SettingsError(f"output_temperatures expects comma-separated numbers, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0 for t in value):
        raise SettingsError(f"output_temperatures must be positive numbers; got {value!r}")
    temperatures = sorted({float(t) for t in value})
    if temperatures and (1.0 not in temperatures or len(temperatures) < 2):
        raise SettingsError(f"output_temperatures must hold 1 and at least one other temperature (or none: ''); "
                            f"got {value!r}")
    return temperatures
