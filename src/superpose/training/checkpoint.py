"""Atomic training checkpoints in safetensors + JSON (nothing is ever unpickled).

Each checkpoint is a folder `checkpoints/step-NNNNNNNN` written under a temporary name, synced, then
renamed into place, so a crash or SIGKILL at any moment leaves either the previous checkpoints or the
new one, never a half-written one. Only the latest `keep` are kept.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
LEGACY_CHECKPOINT = "checkpoint"  # the single per-epoch folder of earlier versions
_STEP_DIR = re.compile(r"step-(\d+)$")


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    progress: dict, keep: int = 2) -> Path:
    """Write checkpoint `step-<progress['step']>` atomically, then drop all but the latest `keep`."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(progress['step']):08d}"
    final, tmp = root / name, root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=2, sort_keys=True))
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2, sort_keys=True))
    for file in tmp.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():  # the same step saved twice (e.g. save_every landing on an epoch end): replace it
        old = root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    for stale in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))
             and (p / "progress.json").is_file()]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: Path) -> Path | None:
    """The latest complete checkpoint (a folder of an earlier version's layout counts too)."""
    found = list_checkpoints(run_dir)
    if found:
        return found[-1]
    for name in (LEGACY_CHECKPOINT, f".{LEGACY_CHECKPOINT}.old"):
        candidate = Path(run_dir) / name
        if (candidate / "progress.json").is_file():
            return candidate
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(trainable weights, optimizer state dict, progress)."""
    trainable = load_file(str(path / "trainable.safetensors"))
    optimizer = _unflatten_optimizer(
        load_file(str(path / "optimizer.safetensors")), json.loads((path / "optimizer.json").read_text())
    )
    return trainable, optimizer, json.loads((path / "progress.json").read_text())
