"""What makes a resumed run the same run: the data order it was trained with, checked field by field."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from superpose.core.settings import SettingsError
from superpose.training.settings import DATA_ORDER_KEYS, TrainSettings


def _file_fingerprint(path: str) -> dict:
    """Path, size and content hash: a resumed run must read the very same data."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# What a checkpoint written before a key was recorded implies for it.
_DATA_ORDER_DEFAULTS = {"grad_accum": 1, "processes": 1, "switch_rate": 0.0}


def _tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer decides the blocks: a hash of its vocabulary and end-of-text token."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([vocab, tokenizer.eos_token_id]).encode()).hexdigest()


def data_order(settings: TrainSettings, train_files: dict[str, str], processes: int = 1, tokenizer=None) -> dict:
    """Everything that fixes which blocks each step sees (and which process sees them).

    The files' order counts too: their blocks are concatenated in the order given.
    """
    order = {key: getattr(settings, key) for key in DATA_ORDER_KEYS}
    order["processes"] = processes
    order["train_files"] = {name: _file_fingerprint(path) for name, path in sorted(train_files.items())}
    order["train_file_order"] = list(train_files)
    if tokenizer is not None:
        order["tokenizer"] = _tokenizer_fingerprint(tokenizer)
    return order


def check_resumable(saved: dict, now: dict, run_dir: Path) -> None:
    """Refuse to resume when the data order would differ from the interrupted run's, naming each difference."""
    differences = []
    for key in sorted(set(saved) | set(now)):
        if key == "train_files":
            old, new = saved.get(key, {}), now.get(key, {})
            for name in sorted(set(old) | set(new)):
                if name not in old or name not in new:
                    differences.append(f"train file {name!r} ({'added' if name in new else 'removed'})")
                elif old[name] != new[name]:
                    what = "path" if old[name]["path"] != new[name]["path"] else "content"
                    differences.append(f"train file {name!r} ({what} changed: "
                                       f"{old[name]['path']} -> {new[name]['path']})")
        elif key == "stacks" and key not in saved:
            continue  # a checkpoint from before the stacks were recorded
        elif saved.get(key, _DATA_ORDER_DEFAULTS.get(key)) != now.get(key, _DATA_ORDER_DEFAULTS.get(key)):
            old, new = saved.get(key, _DATA_ORDER_DEFAULTS.get(key)), now.get(key, _DATA_ORDER_DEFAULTS.get(key))
            hint = " (launch as many processes as the checkpoint's run)" if key == "processes" else ""
            differences.append(f"{key} (checkpoint {old!r}, now {new!r}){hint}")
    if differences:
        raise SettingsError(f"--resume: {run_dir} was trained with other data-order settings, so resuming would not "
                            f"continue the same run. Differences: {'; '.join(differences)}. Use the checkpoint's "
                            f"settings, or a new --out.")


