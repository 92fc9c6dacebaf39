"""What every settings dataclass shares: fields that carry their flag's help, checks, YAML, old names.

Settings come from a YAML file and/or flags; both are validated into dataclasses at the edge, each beside the
code that reads it (`model.settings`, `training.settings`, `training.distill`), and the exact settings are saved
beside every run. Each field's metadata holds its command-line help, and a field that takes one of a fixed set of
strings is typed `Literal[...]`, whose values are its choices (validation and the flag's choices), so a new setting
is one line and its flag appears on every command that takes settings.
"""
from __future__ import annotations

import functools
import math
import types
import typing
import warnings
from dataclasses import field, fields
from pathlib import Path
from typing import Literal

import yaml


class SettingsError(ValueError):
    """A setting is unknown or has a bad value."""


def setting(default, help: str):
    """A dataclass field whose metadata carries its flag's help text (a list default is copied per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok or not math.isfinite(value):
        raise SettingsError(f"{name} must be {'non-negative' if allow_zero else 'positive'}; got {value!r}")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _members(annotation) -> tuple:
    """`X | None` -> (X,); anything else -> (annotation,)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _scalar_type(annotation) -> type | None:
    """int / float / str for `int`, `float | None`, `Literal["a", "b"]`, ...; None for lists and other shapes."""
    members = _members(annotation)
    if len(members) != 1:
        return None
    kind = members[0]
    if typing.get_origin(kind) is Literal:
        return str if all(isinstance(a, str) for a in typing.get_args(kind)) else None
    return kind if kind in (int, float, str) else None


def field_type(cls, name: str) -> type | None:
    """The scalar type of a settings field (None for lists and other shapes)."""
    return _scalar_type(_hints(cls)[name])


def field_choices(cls, name: str) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) field takes; None for a field of any value."""
    members = _members(_hints(cls)[name])
    if len(members) == 1 and typing.get_origin(members[0]) is Literal:
        return typing.get_args(members[0])
    return None


def coerce_numbers(settings) -> None:
    """YAML reads `2e-4` as a string (YAML 1.1 needs a dot): accept numeric strings for numeric settings."""
    hints = _hints(type(settings))
    for f in fields(settings):
        kind, value = _scalar_type(hints[f.name]), getattr(settings, f.name)
        if kind not in (int, float) or not isinstance(value, str):
            continue
        try:
            number = float(value.strip())
        except ValueError:
            raise SettingsError(f"{f.name} must be a number; got {value!r}") from None
        if kind is int:
            if not number.is_integer():
                raise SettingsError(f"{f.name} must be an integer; got {value!r}")
            number = int(number)
        setattr(settings, f.name, number)
    for f in fields(settings):  # an integral float (e.g. `epochs: 2.0`) for an int setting
        value = getattr(settings, f.name)
        if _scalar_type(hints[f.name]) is int and isinstance(value, float) and value.is_integer():
            setattr(settings, f.name, int(value))


def check_counts(settings, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Positive integers (`optional` ones may be None); a training block holds at least 2 tokens."""
    for name in (*required, *optional):
        value = getattr(settings, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            null = " or null" if name in optional else ""
            raise SettingsError(f"{name} must be a positive integer{null}; got {value!r}")
    if getattr(settings, "block_size", 2) < 2:
        raise SettingsError("block_size must be at least 2")


def check_choices(settings) -> None:
    """Every `Literal` field holds one of its values (None: the field's default rule)."""
    for f in fields(settings):
        choices, value = field_choices(type(settings), f.name), getattr(settings, f.name)
        if choices and value is not None:
            check_choice(f.name, value, choices)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", FutureWarning, stacklevel=4)


def upgrade_names(values: dict, renamed: dict[str, str]) -> dict:
    """A settings mapping with old setting names (`renamed`: old -> new) replaced by today's, each with a notice."""
    values = dict(values)
    for old, new in renamed.items():
        if old in values:
            if new in values:
                raise SettingsError(f"{old} is the old name of {new}: give one of them")
            _deprecated(f"the setting {old}", new)
            values[new] = values.pop(old)
    return values


def upgrade_values(settings, renamed: dict[tuple[str, str], str]) -> None:
    """Old values (`renamed`: (setting, old value) -> new value) replaced by today's in place, each with a notice."""
    for (name, old), new in renamed.items():
        if getattr(settings, name) == old:
            _deprecated(f"{name}: {old}", f"{name}: {new}")
            setattr(settings, name, new)


def parse_boolean(name: str, value: object) -> bool:
    """true/false from YAML or a flag (also yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SettingsError(f"{name} must be true or false; got {value!r}")


Dtype = Literal["float32", "bfloat16", "float16"]
DTYPES = typing.get_args(Dtype)


def torch_dtype(name: str):
    """'bfloat16' -> torch.bfloat16, with a message naming the choices."""
    import torch

    check_choice("dtype", name, DTYPES)
    return getattr(torch, name)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SettingsError(f"{path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise SettingsError(f"{path} is not valid UTF-8 (byte {err.start})") from err
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of setting: value")
    return data
