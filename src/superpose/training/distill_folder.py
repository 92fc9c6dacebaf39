"""What `distill` checks before it tokenises or loads anything: the run it reads and the folder it writes.

The output folder is what a user uploads, so it holds only the checkpoint, the tokenizer, the model card and
`distill.json`. Checkpoints and the teacher cache live in its `.superpose/` work folder, removed when the run
ends unless kept. A folder that holds anything else is never written into without `overwrite`: pointing
`--out` at an expert's own folder must not destroy it.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from superpose.core.settings import SettingsError
from superpose.training.checkpoint import find_checkpoint

WORK_DIR = ".superpose"


def work_folder(out_dir: Path) -> Path:
    """Checkpoints and the teacher cache: inside the output folder, outside what is uploaded."""
    return Path(out_dir) / WORK_DIR


@dataclass
class RunInfo:
    """The superposed run as its config names it: no weights loaded."""

    config: object  # SuperposedConfig
    stack_names: list[str]
    stack_paths: list[str | None]
    index: int  # the stack the student starts from

    @property
    def start_name(self) -> str:
        return self.stack_names[self.index]

    @property
    def start_path(self) -> str | None:
        return self.stack_paths[self.index]


def inspect_run(run_dir: Path, start: str | None, block_size: int, teacher=None) -> RunInfo:
    """Read the run's config (or the passed teacher's): its stacks, the start stack, the positions it holds."""
    from superpose.model.superposed import WEIGHTS_NAME, SuperposedConfig

    if teacher is not None:
        config = teacher.config
    else:
        if not (run_dir / "config.json").is_file() or not (run_dir / WEIGHTS_NAME).is_file():
            raise SettingsError(f"{run_dir} is not a superposed run folder (needs config.json and {WEIGHTS_NAME}, "
                                "as `superpose train` writes them)")
        config = SuperposedConfig.from_pretrained(run_dir)
    names = ["base", *config.expert_names]
    paths = [config.base_model, *[(config.experts or {}).get(name) for name in config.expert_names]]
    name = start or names[1]  # the first fine-tune: every measured distillation started there (BENCHMARKS.md)
    if name not in names:
        raise SettingsError(f"--start {name!r} names no stack of the run: use one of {names}")
    limit = config.max_position_embeddings
    if limit is not None and block_size > limit:
        raise SettingsError(f"--block-size {block_size} exceeds the model's {limit} positions")
    return RunInfo(config, names, paths, names.index(name))


def weights_fingerprint(run_dir: Path, info: RunInfo) -> dict:
    """What the teacher's outputs depend on beyond its settings: the trained parts' content (sha256) and each
    local stack's weight files (name, size, modification time; hashing gigabytes would cost minutes)."""
    from superpose.model.superposed import WEIGHTS_NAME

    trained = run_dir / WEIGHTS_NAME
    record = {"trained": hashlib.sha256(trained.read_bytes()).hexdigest() if trained.is_file() else None}
    for name, path in zip(info.stack_names, info.stack_paths):
        folder = Path(path) if path else None
        if folder is not None and folder.is_dir():
            record[name] = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                  for f in folder.glob("*.safetensors"))
        else:
            record[name] = path  # a hub id: its revision is what the name resolves to
    return record


def prepare_out_dir(out_dir: Path, run_dir: Path, info: RunInfo, resume: bool, overwrite: bool) -> None:
    """Refuse to lose work: a folder of the run or of a stack, a folder with other files (without `overwrite`),
    a checkpoint that would be ignored (without `resume`), or `resume` with nothing to resume."""
    out = out_dir.resolve()
    protected = [run_dir, *[Path(p) for p in info.stack_paths if p and Path(p).is_dir()]]
    if any(out == p.resolve() for p in protected):
        raise SettingsError(f"--out {out_dir} is the run's or one of its stacks' own folder: pick a new folder")
    work = work_folder(out_dir)
    checkpoint = find_checkpoint(work)
    if resume:
        if checkpoint is None:
            raise SettingsError(f"--resume: {out_dir} holds no distillation checkpoint to continue from (a finished "
                                "run removes its checkpoints unless --keep-work is given)")
        return
    if checkpoint is not None and not overwrite:
        raise SettingsError(f"{out_dir} holds an interrupted distillation: pass --resume to continue it, or "
                            "--overwrite to start over")
    others = sorted(p.name for p in out_dir.iterdir() if p.name != WORK_DIR) if out_dir.is_dir() else []
    if others and not overwrite:
        what = "a finished distillation" if "distill.json" in others else f"other files ({', '.join(others[:4])})"
        raise SettingsError(f"--out {out_dir} holds {what}: pass --overwrite to write over it, or pick a new folder")
    if overwrite and checkpoint is not None:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)


def finish_work(out_dir: Path, keep: bool) -> None:
    """Remove the work folder after a successful run (kept with `keep`, e.g. to resume with more steps)."""
    if not keep:
        shutil.rmtree(work_folder(out_dir), ignore_errors=True)
