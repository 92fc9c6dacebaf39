"""Load base/expert checkpoints and their tokenizer from local folders or hub ids, with clear errors; devices and
the process's peak memory."""
from __future__ import annotations

import sys
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


def default_device() -> str:
    """cuda when a GPU is usable, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for a --device value (None: cuda when available, else cpu), or an error saying why not."""
    from superpose.core.settings import SettingsError

    try:
        device = torch.device(name if name is not None else default_device())
    except (RuntimeError, TypeError) as err:
        raise SettingsError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1): {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                                "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def load_causal_lm(
    name_or_path: str, dtype: torch.dtype = torch.float32, device_map: str | torch.device | None = None
) -> PreTrainedModel:
    """Load straight into `dtype` and onto `device_map` (a device, or auto/balanced/... placement across devices).

    Weights are read from the checkpoint into the target dtype and device tensor by tensor, so a bf16 stack
    never exists as an fp32 (or CPU) copy of the whole model.
    """
    source = resolve_model_path(name_or_path)
    if isinstance(device_map, torch.device):
        device_map = str(device_map)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device_map)
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


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """This process's peak resident memory (and peak CUDA memory allocated by torch on a GPU), in MiB."""
    peaks = {}
    try:
        import resource  # not on Windows
    except ImportError:
        resource = None
    if resource is not None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peaks["peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
    if device.type == "cuda":
        peaks["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks
