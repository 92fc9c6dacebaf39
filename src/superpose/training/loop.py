"""Train the blend weights, gates and autoencoders, on the graph we serve, with or without labels.

Labelled text (`--train NAME=FILE`) gives reconstruction targets from one independent no-grad run of
each stack per batch (a token of domain m should reproduce stack m's states) and, with
`gate_label_weight`, a gate cross-entropy towards that stack. Unlabelled text (`--train FILE`) adds only the
LM loss (and an optional load-balance term). `switch_rate` turns a share of the blocks into synthetic
code-switched blocks with per-token labels.

`train` is a list of named steps; `run_epochs` is the loop itself (epochs or a step budget, progress bar,
step checkpoints, exact resume), shared with any other trainer of this package.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from superpose.core.loading import peak_memory_mb
from superpose.core.metrics import LMScore
from superpose.core.settings import DTYPES, SettingsError
from superpose.core.text_tables import format_table
from superpose.data.text import DataError
from superpose.evaluation.scoring import scoring_batches
from superpose.model.superposed import SuperposedModel
from superpose.training.blocks import (
    MIXED,
    UNLABELLED,
    LabelledBlocks,
    domain_names,
    is_unlabelled,
    load_labelled,
)
from superpose.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from superpose.training.distributed import Processes, setup_processes
from superpose.training.losses import compute_losses
from superpose.training.resume import check_resumable, data_order
from superpose.training.settings import TrainSettings
from superpose.training.step import SequenceSeededDropout, autocast, make_optimizer, resolve_mixed_precision, train_step

RUN_FILE = "run.json"
__all__ = ["train", "run_epochs", "LoopState", "TrainResult", "validate", "RUN_FILE", "UNLABELLED", "MIXED",
           "is_unlabelled", "domain_names", "load_labelled"]


def _home(model: SuperposedModel) -> torch.device:
    """The device batches go to: where the blend (and the first stack's inputs) live."""
    return model.blend.spline.control.device


@torch.no_grad()
def validate(model: SuperposedModel, data: LabelledBlocks, settings: TrainSettings, pad_id: int,
             processes: Processes | None = None) -> dict[str, float]:
    """Token-weighted losses over the validation blocks, and the served graph's perplexity per domain.

    Each batch's mean is weighted by the tokens it covers (scored next-token positions for the LM loss,
    real tokens for the reconstruction), so a short last batch counts for what it holds. With
    several processes each scores every P-th block and the sums are added up.
    """
    device = _home(model)
    processes = processes or Processes(0, 1, device)
    precision = resolve_mixed_precision(settings, device, model.stack_dtype)
    model.eval()
    # recon sum, recon tokens, lm sum, lm tokens, then (nll, tokens, correct) per domain and for unlabelled blocks
    names = [*data.names, UNLABELLED]
    totals = torch.zeros(4 + 3 * len(names), dtype=torch.float64)
    rows = torch.arange(len(data))[processes.index :: processes.count]
    for _, batch in scoring_batches(data, settings.batch_size, pad_id, device, rows):
        with autocast(precision, device):
            losses = compute_losses(model, batch, settings)
            logits = losses["logits"]
            if settings.training_graph != "sequential":  # perplexity is always that of the graph we serve
                logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        recon_tokens = int(((batch.token_domains >= 0) & (batch.attention_mask == 1)).sum())
        lm_tokens = int((batch.labels[:, 1:] != -100).sum())
        totals[:4] += torch.tensor([float(losses["recon"]) * recon_tokens, recon_tokens,
                                    float(losses["lm"]) * lm_tokens, lm_tokens], dtype=torch.float64)
        for index in range(len(names)):
            picked = batch.domains == (index if index < len(data.names) else MIXED)
            if picked.any():
                score = LMScore()
                score.update(logits[picked], batch.labels[picked])
                totals[4 + 3 * index : 7 + 3 * index] += torch.tensor(
                    [score.total_nll, score.total_tokens, score.total_correct], dtype=torch.float64)
    totals = processes.sum_(totals.to(device)).cpu()
    result = {"valid_recon": float(totals[0] / max(totals[1], 1)), "valid_lm": float(totals[2] / max(totals[3], 1))}
    reg = float(model.blend.regularisation())  # it depends on the weights only
    result["valid_blend_reg"] = reg
    result["valid_loss"] = (settings.recon_weight * result["valid_recon"] + settings.lm_weight * result["valid_lm"]
                            + settings.blend_reg_weight * reg)
    for index, name in enumerate(names):
        nll, tokens, correct = totals[4 + 3 * index : 7 + 3 * index].tolist()
        if tokens:
            score = LMScore()
            score.total_nll, score.total_tokens, score.total_correct = nll, int(tokens), int(correct)
            result[f"valid_ppl_{name}"] = score.ppl
    return result


def _absolute(files: dict[str, str]) -> dict[str, str]:
    """Recorded paths must work from any directory (eval reads them to train the router)."""
    return {name: str(Path(path).resolve()) for name, path in files.items()}


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    throughput: dict = field(default_factory=dict)  # tokens/s and peak memory per process, this session

    def summary(self) -> str:
        if not self.history:
            return "no epochs run"
        table = history_table(self.history, f"training summary ({self.run_dir})")
        return table + ("\n" + describe_throughput(self.throughput) if self.throughput else "")


def history_table(history: list[dict], title: str) -> str:
    """One row per recorded epoch (or budget end): epoch, step and every logged number."""
    keys = [k for k in history[-1] if k not in ("epoch", "step")]
    rows = [[h["epoch"], h["step"], *[h.get(k, float("nan")) for k in keys]] for h in history]
    return format_table(["epoch", "step", *keys], rows, title=title)


def describe_throughput(record: dict) -> str:
    """One line: training tokens/s (all processes, and per process) and each process's peak memory."""
    peaks = ", ".join(
        (f"{p['peak_cuda_mb']:.0f} MB CUDA" if "peak_cuda_mb" in p
         else f"{p.get('peak_rss_mb', float('nan')):.0f} MB RSS")
        for p in record["peak_memory_mb"])
    return (f"throughput: {record['tokens_per_second']:.0f} training tokens/s over {record['processes']} "
            f"process(es) ({record['tokens_per_second_per_process']:.0f} per process; {record['tokens']} tokens in "
            f"{record['train_seconds']:.1f} s on {record['device']}, mixed precision {record['mixed_precision']}); "
            f"peak memory per process: {peaks}")


def _settings_record(settings: TrainSettings, model: SuperposedModel) -> TrainSettings:
    """The dtype recorded is the stacks' real one (a Python caller may pass bf16 stacks with default settings)."""
    dtype = str(model.stack_dtype).removeprefix("torch.")
    return replace(settings, dtype=dtype) if dtype in DTYPES else settings


def _place(model: SuperposedModel, device: torch.device) -> None:
    """Stacks onto `device` unless a device map spreads them; trainable parts beside the layers they serve."""
    spread = any(len(set(getattr(stack, "hf_device_map", {}).values())) > 1 for stack in model.stack_models)
    if not spread:
        model.to(device)
    model.place_trainable(device)


def _broadcast_trainable(model: SuperposedModel, processes: Processes) -> None:
    """Every process starts from the main process's trainable weights (cheap; guards against unseeded inits)."""
    for param in model.parameters():
        if param.requires_grad:
            processes.broadcast_(param.data)



@dataclass
class LoopState:
    """Where a run stands. All but this session's counters go into every checkpoint, so a resumed run
    continues exactly where the interrupted one was."""

    epoch: int = 0
    batch: int = 0  # steps of `epoch` done before an interruption
    step: int = 0
    history: list[dict] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)  # loss sums since the epoch began
    counted: int = 0  # steps in `running`
    tokens: int = 0  # trained this session
    seconds: float = 0.0  # spent in steps this session

    def record(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "history": self.history,
                "running": self.running, "counted": self.counted}

    @classmethod
    def from_record(cls, saved: dict) -> LoopState:
        return cls(epoch=saved["epoch"], batch=saved.get("batch", 0), step=saved["step"], history=saved["history"],
                   running=dict(saved.get("running", {})), counted=saved.get("counted", 0))


def epoch_order(examples: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch `epoch` visits the training examples (seeded: a resumed run sees the same)."""
    return torch.randperm(examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def run_epochs(
    state: LoopState,
    examples: int,
    global_batch: int,
    settings,
    step: Callable[[list[int], int, int], tuple[dict[str, float], int]],
    save: Callable[[], None],
    end_of_epoch: Callable[[], dict] = dict,
    start_of_epoch: Callable[[], None] = lambda: None,
    show: bool = True,
) -> None:
    """The loop: `settings.max_steps` optimiser steps when given (epochs repeat until then), else `settings.epochs`
    passes over `examples`, each epoch in its own seeded order.

    `step(rows, first, epoch)` runs one optimiser step on the rows at positions `first`... of the epoch's order
    and returns (losses, tokens); `save()` writes a checkpoint of `state` (after each epoch, every
    `settings.save_every` steps, and when a step budget ends inside an epoch); `end_of_epoch()` returns
    numbers for the history (validation). Any randomness of a step is seeded by (seed, epoch, step), so a
    resumed run repeats it.
    """
    steps_per_epoch = math.ceil(examples / global_batch)

    def unfinished() -> bool:
        return state.step < settings.max_steps if settings.max_steps is not None else state.epoch < settings.epochs

    first_epoch = state.epoch
    while unfinished():
        start_of_epoch()
        epoch = state.epoch
        order = epoch_order(examples, settings.seed, epoch)
        skip = state.batch if epoch == first_epoch else 0
        remaining = steps_per_epoch - skip
        if settings.max_steps is not None:
            remaining = min(remaining, settings.max_steps - state.step)
        total = f"/{settings.epochs}" if settings.max_steps is None else ""
        bar = tqdm(range(skip, skip + remaining), desc=f"epoch {epoch + 1}{total}", disable=not show, leave=False)
        if skip == 0:
            state.running, state.counted = {}, 0
        for index in bar:
            torch.manual_seed(settings.seed * 100_003 + epoch * 10_007 + index)
            tick = time.perf_counter()
            first = index * global_batch
            losses, tokens = step(order[first : first + global_batch], first, epoch)
            state.seconds += time.perf_counter() - tick
            state.tokens += tokens
            state.step += 1
            state.counted += 1
            state.batch = index + 1
            for key, value in losses.items():
                state.running[key] = state.running.get(key, 0.0) + value
            bar.set_postfix({**{k: f"{v / state.counted:.3f}" for k, v in state.running.items() if k != "blend_reg"},
                             "tok/s": f"{state.tokens / max(state.seconds, 1e-9):.0f}"})
            if settings.save_every and state.step % settings.save_every == 0 and state.batch < steps_per_epoch:
                save()
        bar.close()
        finished = state.batch >= steps_per_epoch
        record = {"epoch": epoch + 1 if finished else epoch + state.batch / steps_per_epoch, "step": state.step,
                  **{f"train_{k}": v / max(state.counted, 1) for k, v in state.running.items()}}
        record.update(end_of_epoch())
        state.history.append(record)
        if finished:
            state.running, state.counted = {}, 0
            state.epoch, state.batch = epoch + 1, 0
            save()
        else:  # stopped inside the epoch (the step budget ended): a resume continues this epoch
            save()
            break


def throughput_record(state: LoopState, processes: Processes, global_batch: int, grad_accum: int,
                      precision: str) -> dict:
    """This session's training tokens/s (all processes, and per process) and each process's peak memory."""
    rate = state.tokens / max(state.seconds, 1e-9)
    return {
        "processes": processes.count, "grad_accum": grad_accum, "global_batch": global_batch,
        "device": str(processes.device), "mixed_precision": precision, "tokens": state.tokens,
        "train_seconds": state.seconds, "tokens_per_second": rate,
        "tokens_per_second_per_process": rate / processes.count,
        "peak_memory_mb": processes.gather(peak_memory_mb(processes.device)),
    }


def checkpoint_to_resume(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint `--resume` continues from; a checkpoint without `--resume` is an error (it would be lost)."""
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise SettingsError(f"{run_dir} already holds a training checkpoint: pass --resume to continue, or a new --out")
    return checkpoint if resume else None


# ---- train(): named steps ---------------------------------------------------------------------------------


def resolve_settings(settings: TrainSettings, model: SuperposedModel, processes: Processes) -> TrainSettings:
    """The variant's defaults filled in; the device, the stacks' real dtype and the autocast mode recorded."""
    if settings.device_map and processes.count > 1:
        raise SettingsError("--device-map spreads one copy of the stacks over the devices: run it as one process "
                            f"(this run has {processes.count})")
    settings = _settings_record(settings.resolved(model.settings.variant), model)
    precision = resolve_mixed_precision(settings, processes.device, model.stack_dtype)
    settings = replace(settings, device=str(processes.device), mixed_precision=precision)
    if model.settings.gate_evidence != "none" and settings.training_graph == "parallel" \
            and model.settings.graph == "sequential":
        raise SettingsError("training_graph parallel reads each stack's own likelihood as gate evidence, while the "
                            "sequential graph it serves reads its layers' logit lens: use graph parallel, or "
                            "training_graph sequential")
    return settings


def load_data(model: SuperposedModel, tokenizer, train_files: dict[str, str], valid_files: dict[str, str] | None,
              settings: TrainSettings) -> tuple[LabelledBlocks, LabelledBlocks | None]:
    if not train_files:
        raise DataError("no training data: pass --train NAME=FILE for the base and/or an expert, or --train FILE "
                        "for unlabelled text")
    names = domain_names(model)
    train_data = load_labelled(train_files, names, tokenizer, settings.block_size, settings.max_train_blocks,
                               settings.switch_rate, settings.seed)
    valid_data = (load_labelled(valid_files, names, tokenizer, settings.block_size, settings.max_valid_blocks)
                  if valid_files else None)
    return train_data, valid_data


def run_identity(model: SuperposedModel, settings: TrainSettings, train_files: dict[str, str], processes: Processes,
                 tokenizer) -> dict:
    """The data order plus which checkpoint each stack is: the trained spline columns, gate rows and evidence
    belong to them in order, so a resume over other stacks is refused."""
    record = data_order(settings, train_files, processes.count, tokenizer)
    record["stacks"] = [["base", model.config.base_model],
                        *[[name, model.config.experts[name]] for name in model.config.expert_names]]
    return record


def resume_from(checkpoint: Path | None, key: str, identity: dict, folder: Path, load) -> LoopState:
    """A fresh state, or `checkpoint`'s: what it recorded under `key` must match `identity` (the same run), then
    `load(trainable tensors, optimiser state, record)` puts the weights back. Shared by `train` and `distill`."""
    if checkpoint is None:
        return LoopState()
    trainable, opt_state, saved = load_checkpoint(checkpoint)
    if key in saved:
        check_resumable(saved[key], identity, folder)
    load(trainable, opt_state, saved)
    return LoopState.from_record(saved)


def restore(model: SuperposedModel, optimizer: torch.optim.Optimizer, settings: TrainSettings, run_dir: Path,
            identity: dict, resume: bool) -> LoopState:
    """A fresh state, or the last checkpoint's weights, optimiser and state when resuming the same run."""

    def load(trainable: dict, opt_state: dict, saved: dict) -> None:
        if saved["model_settings"] != _settings_json(model):
            raise SettingsError(f"--resume: the model settings differ from the checkpoint's in {run_dir}")
        model.load_trainable_state_dict(trainable)
        optimizer.load_state_dict(opt_state)
        for group, fresh in zip(optimizer.param_groups, make_optimizer(model, settings).param_groups):
            group["lr"] = fresh["lr"]  # learning rates given now win over the checkpoint's
            group["name"] = fresh["name"]  # checkpoints of older versions name the spline's group "alpha"

    return resume_from(checkpoint_to_resume(run_dir, resume), "data_order", identity, run_dir, load)


def _settings_json(model: SuperposedModel) -> dict:
    return json.loads(json.dumps(asdict(model.settings)))


def write_run(model: SuperposedModel, run_dir: Path, settings: TrainSettings, train_files: dict[str, str],
              valid_files: dict[str, str] | None, result: TrainResult) -> None:
    """The trained weights, the config naming the stacks, and `run.json` (settings, data, history, throughput)."""
    model.save_pretrained(run_dir)
    (run_dir / RUN_FILE).write_text(json.dumps({
        "train_settings": asdict(settings), "train_files": _absolute(train_files),
        "valid_files": _absolute(valid_files or {}), "history": result.history, "steps": result.steps,
        "seconds_this_session": result.seconds, "throughput_this_session": result.throughput,
    }, indent=2, sort_keys=True))


def train(
    model: SuperposedModel,
    tokenizer,
    train_files: dict[str, str],
    valid_files: dict[str, str] | None,
    run_dir: str | Path,
    settings: TrainSettings,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train, validate and checkpoint; `resume=True` continues exactly from the last checkpoint.

    Training lasts `settings.max_steps` optimiser steps when given (epochs repeat until then), else
    `settings.epochs` passes. A checkpoint is written after every epoch and, with `save_every`, every N steps.
    Launched as several processes (`accelerate launch` / `torchrun`), each step sees batch_size x processes x
    grad_accum blocks, and only the main process writes files and shows progress.
    """
    processes = setup_processes(settings.device)
    settings = resolve_settings(settings, model, processes)
    run_dir = Path(run_dir)
    train_data, valid_data = load_data(model, tokenizer, train_files, valid_files, settings)
    identity = run_identity(model, settings, train_files, processes, tokenizer)
    _place(model, processes.device)
    optimizer = make_optimizer(model, settings)
    state = restore(model, optimizer, settings, run_dir, identity, resume)
    _broadcast_trainable(model, processes)
    processes.barrier()  # every process has read the run folder before the main process writes to it
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(run_dir)
    started = time.perf_counter()
    global_batch = settings.batch_size * processes.count * settings.grad_accum
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def save() -> None:
        if processes.is_main:
            save_checkpoint(run_dir, model.trainable_state_dict(), optimizer,
                            {**state.record(), "data_order": identity, "model_settings": _settings_json(model)},
                            keep=settings.keep_checkpoints)

    dropout = SequenceSeededDropout(model, settings.block_size)
    try:
        run_epochs(
            state, len(train_data), global_batch, settings,
            step=lambda rows, first, epoch: train_step(model, optimizer, train_data, rows, first, epoch, settings,
                                                       processes, dropout, pad_id, settings.mixed_precision),
            save=save,
            end_of_epoch=lambda: validate(model, valid_data, settings, pad_id, processes) if valid_data else {},
            start_of_epoch=model.train,
            show=progress and processes.is_main,
        )
    finally:
        dropout.remove()
    result = TrainResult(run_dir, state.history, state.step, time.perf_counter() - started,
                         throughput_record(state, processes, global_batch, settings.grad_accum,
                                           settings.mixed_precision))
    model.eval()
    if processes.is_main:
        write_run(model, run_dir, settings, train_files, valid_files, result)
    processes.barrier()  # no process returns before the run folder is complete
    return result
