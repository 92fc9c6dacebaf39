"""Atomic per-epoch training checkpoints in safetensors + JSON (nothing is ever unpickled)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint"


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


def save_checkpoint(run_dir: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, progress: dict) -> Path:
    """Write to a temporary folder, then swap it in, so an interruption never leaves a half checkpoint."""
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / CHECKPOINT, run_dir / f".{CHECKPOINT}.tmp", run_dir / f".{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=2, sort_keys=True))
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2, sort_keys=True))
    for file in tmp.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The latest complete checkpoint (falls back to the previous one if a swap was interrupted)."""
    for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
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
