"""Named starting settings (`--preset`) and the flat settings mapping of a YAML file and flags, split into
`ModelSettings` and `TrainSettings`."""
from __future__ import annotations

from dataclasses import fields

from superpose.core.settings import SettingsError, check_choice, upgrade_names
from superpose.model.settings import PAPER_MODEL, ModelSettings
from superpose.training.settings import PAPER_TRAIN, RENAMED_SETTINGS, TrainSettings


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


MODEL_KEYS = _field_names(ModelSettings)
TRAIN_KEYS = _field_names(TrainSettings)

# Named starting points; a config file and flags override any of their values. The dataclass defaults are the
# `dynamic` preset, so it adds nothing.
PRESETS: dict[str, dict] = {
    # The reference's settings (with causal convolutions): a static spline, one shared running state, the base's head.
    "paper": {**PAPER_MODEL, **PAPER_TRAIN},
    # Chosen on the real-text benchmark's selection halves (BENCHMARKS.md): the experts run side by side and a
    # per-token gate, reading each expert's running likelihood and the side path's state, mixes their next-token
    # distributions; it competes with the training-free rate mixture, which it equals untrained. Its values are
    # the dataclass defaults.
    "dynamic": {},
}
DEFAULT_PRESET = "dynamic"  # what `superpose train` uses without --preset: the best measured (BENCHMARKS.md)


def preset_values(name: str) -> dict:
    check_choice("preset", name, tuple(PRESETS))
    return dict(PRESETS[name])


def preset_settings(name: str) -> tuple[ModelSettings, TrainSettings]:
    """The model and training settings of a preset, for callers of the Python API."""
    model, train, _ = split_settings(preset_values(name))
    return model, train


def split_settings(values: dict, allowed_extra: set[str] = frozenset()) -> tuple[ModelSettings, TrainSettings, dict]:
    """Validate a flat mapping into (model settings, train settings, extras); unknown keys are an error.

    A `preset` key names the values to start from; every other key overrides them."""
    values = upgrade_names(values, RENAMED_SETTINGS)
    if "preset" in values:
        values = {**preset_values(values.pop("preset")), **values}
    unknown = sorted(set(values) - MODEL_KEYS - TRAIN_KEYS - set(allowed_extra))
    if unknown:
        raise SettingsError(
            f"unknown setting(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(MODEL_KEYS | TRAIN_KEYS | set(allowed_extra)))}"
        )
    try:
        model = ModelSettings(**{k: v for k, v in values.items() if k in MODEL_KEYS})
        train = TrainSettings(**{k: v for k, v in values.items() if k in TRAIN_KEYS})
    except TypeError as err:
        raise SettingsError(str(err)) from err
    extras = {k: v for k, v in values.items() if k in allowed_extra}
    return model, train, extras
