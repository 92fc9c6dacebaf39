"""Load base/expert checkpoints and their tokenizer from local folders or hub ids, with clear errors."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel


class ModelLoadError(ValueError):
    """A checkpoint could not be found or read."""


def resolve_model_path(name_or_path: str) -> str:
    """Absolute path for an existing local folder (so runs survive a change of directory), else the hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face checkpoint folder (no config.json)")
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"model folder not found: {name_or_path}")
    return name_or_path


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    source = resolve_model_path(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        raise ModelLoadError(
            f"could not load {name_or_path!r}: not a local checkpoint folder and not in the hub cache "
            f"(this machine may be offline). Original error: {err}"
        ) from err
    return model.eval()


def load_tokenizer(name_or_path: str):
    source = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(f"could not load a tokenizer from {name_or_path!r}: {err}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out everywhere
    return tokenizer
