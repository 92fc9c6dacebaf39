"""Train alpha and the autoencoders on domain-labelled text (SPEC §5), on the graph we serve.

Targets come from one independent no-grad run of each expert per batch: a sequence of domain 0
should reproduce the base's states, one of domain 1 the expert's.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .data import DataError, collate, load_texts, tokenize_blocks
from .metrics import LMScore
from .modeling import SuperposedModel, causal_lm_loss
from .settings import DATA_ORDER_KEYS, DTYPES, SettingsError, TrainSettings
from .tables import format_table

RUN_FILE = "run.json"


@dataclass
class LabelledBlocks:
    blocks: list[torch.Tensor]
    domains: list[int]
    names: list[str]  # domain index -> name

    def __len__(self) -> int:
        return len(self.blocks)


def domain_names(model: SuperposedModel) -> list[str]:
    """Domain 0 is the base's; domain 1 the expert's (its name as given by --expert NAME=PATH)."""
    return ["base", model.config.expert_name]


def load_labelled(
    files: dict[str, str], names: list[str], tokenizer, block_size: int, max_blocks: int | None
) -> LabelledBlocks:
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise DataError(f"data named {unknown} matches no model: use one of {names} (base, or the expert's name)")
    data = LabelledBlocks([], [], names)
    for name, path in files.items():
        blocks = tokenize_blocks(load_texts(path), tokenizer, block_size, max_blocks)
        data.blocks.extend(blocks)
        data.domains.extend([names.index(name)] * len(blocks))
    return data


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor, variant: str) -> torch.Tensor:
    """Masked MSE (1d); 0.9 MSE + 0.1 mean per-token L2 distance (2d)."""
    mask = token_mask.to(predicted.dtype).unsqueeze(-1)  # (B, T, 1)
    tokens = mask.sum().clamp(min=1)
    diff = (predicted - target) * mask  # (B, T, d)
    mse = diff.pow(2).sum() / (tokens * predicted.shape[-1])
    if variant == "1d":
        return mse
    return 0.9 * mse + 0.1 * diff.norm(dim=-1).sum() / tokens


def recon_layers(model: SuperposedModel) -> list[int]:
    """Autoencoder layers; with no autoencoders, every layer (so alpha still learns)."""
    return model.ae_layers or list(range(model.config.num_hidden_layers))


def compute_losses(model: SuperposedModel, batch, settings: TrainSettings) -> dict[str, torch.Tensor]:
    ids, mask = batch.input_ids, batch.attention_mask
    base_states, expert_states = model.independent_states(ids, mask)
    pick_base = (batch.domains == 0).view(-1, 1, 1)  # (B, 1, 1)
    if settings.training_graph == "sequential":
        out = model(ids, attention_mask=mask, output_hidden_states=True)
        predicted = {layer: out.hidden_states[layer + 1] for layer in recon_layers(model)}
        logits = out.logits
    else:
        predicted, logits = model.forward_parallel(base_states, expert_states, mask)
    recon = sum(
        reconstruction_loss(predicted[layer], torch.where(pick_base, base_states[layer], expert_states[layer]),
                            mask, model.settings.variant)
        for layer in recon_layers(model)
    )
    lm = causal_lm_loss(logits, batch.labels)
    reg = model.alpha.regularisation()
    total = settings.recon_weight * recon + settings.lm_weight * lm + settings.alpha_reg_weight * reg
    return {"loss": total, "recon": recon, "lm": lm, "alpha_reg": reg, "logits": logits}


def make_optimizer(model: SuperposedModel, settings: TrainSettings) -> torch.optim.AdamW:
    groups = [{"params": list(model.alpha.parameters()), "lr": settings.lr_alpha, "name": "alpha"}]
    ae_params = list(model.autoencoders.parameters())
    if ae_params:
        groups.append({"params": ae_params, "lr": settings.lr_ae, "name": "autoencoders"})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def _batches(data: LabelledBlocks, batch_size: int, pad_id: int, order: torch.Tensor):
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size].tolist()
        yield collate([data.blocks[i] for i in rows], [data.domains[i] for i in rows], pad_id)


@torch.no_grad()
def validate(model: SuperposedModel, data: LabelledBlocks, settings: TrainSettings, pad_id: int) -> dict[str, float]:
    """Token-weighted losses over the validation blocks, and the served graph's perplexity per domain.

    Each batch's mean is weighted by the tokens it covers (scored next-token positions for the LM loss,
    real tokens for the reconstruction), so a short last batch counts for what it holds (SPEC §8).
    """
    model.eval()
    sums = {"recon": 0.0, "lm": 0.0}
    counts = {"recon": 0, "lm": 0}
    reg = 0.0
    scores = {name: LMScore() for name in data.names}
    for batch in _batches(data, settings.batch_size, pad_id, torch.arange(len(data))):
        batch = _to(batch, settings.device)
        losses = compute_losses(model, batch, settings)
        weights = {"recon": int(batch.attention_mask.sum()), "lm": int((batch.labels[:, 1:] != -100).sum())}
        for key, tokens in weights.items():
            sums[key] += float(losses[key]) * tokens
            counts[key] += tokens
        reg = float(losses["alpha_reg"])  # the same for every batch: it depends on the weights only
        logits = losses["logits"]
        if settings.training_graph != "sequential":  # perplexity is always that of the graph we serve
            logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        for index, name in enumerate(data.names):
            rows = batch.domains == index
            if rows.any():
                scores[name].update(logits[rows], batch.labels[rows])
    result = {f"valid_{k}": sums[k] / max(counts[k], 1) for k in sums}
    result["valid_alpha_reg"] = reg
    result["valid_loss"] = (settings.recon_weight * result["valid_recon"] + settings.lm_weight * result["valid_lm"]
                            + settings.alpha_reg_weight * reg)
    for name, score in scores.items():
        if score.tokens:
            result[f"valid_ppl_{name}"] = score.ppl
    return result


def _to(batch, device: str):
    for key in ("input_ids", "attention_mask", "labels", "domains"):
        setattr(batch, key, getattr(batch, key).to(device))
    return batch


def _absolute(files: dict[str, str]) -> dict[str, str]:
    """Recorded paths must work from any directory (eval reads them to train the router)."""
    return {name: str(Path(path).resolve()) for name, path in files.items()}


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.history:
            return "no epochs run"
        keys = [k for k in self.history[-1] if k not in ("epoch", "step")]
        rows = [[h["epoch"], h["step"], *[h.get(k, float("nan")) for k in keys]] for h in self.history]
        return format_table(["epoch", "step", *keys], rows, title=f"training summary ({self.run_dir})")


def _file_fingerprint(path: str) -> dict:
    """Path, size and content hash: a resumed run must read the very same data."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def data_order(settings: TrainSettings, train_files: dict[str, str]) -> dict:
    """Everything that fixes which blocks each step sees."""
    order = {key: getattr(settings, key) for key in DATA_ORDER_KEYS}
    order["train_files"] = {name: _file_fingerprint(path) for name, path in sorted(train_files.items())}
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
                    differences.append(f"train file {name!r} ({what} changed: {old[name]['path']} -> {new[name]['path']})")
        elif saved.get(key) != now.get(key):
            differences.append(f"{key} (checkpoint {saved.get(key)!r}, now {now.get(key)!r})")
    if differences:
        raise SettingsError(f"--resume: {run_dir} was trained with other data-order settings, so resuming would not "
                            f"continue the same run. Differences: {'; '.join(differences)}. Use the checkpoint's "
                            f"settings, or a new --out.")


def optimizer_step(optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip each parameter group's gradient norm on its own (SPEC §5), then step."""
    for group in optimizer.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], grad_clip)
    optimizer.step()


def _settings_record(settings: TrainSettings, model: SuperposedModel) -> TrainSettings:
    """The dtype recorded is the stacks' real one (a Python caller may pass bf16 stacks with default settings)."""
    dtype = str(model.stack_dtype).removeprefix("torch.")
    return replace(settings, dtype=dtype) if dtype in DTYPES else settings


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
    """
    settings = _settings_record(settings.resolved(model.settings.variant), model)
    run_dir = Path(run_dir)
    names = domain_names(model)
    if not train_files:
        raise DataError("no training data: pass --train NAME=FILE for the base and/or the expert")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_data = load_labelled(train_files, names, tokenizer, settings.block_size, settings.max_train_blocks)
    valid_data = (
        load_labelled(valid_files, names, tokenizer, settings.block_size, settings.max_valid_blocks)
        if valid_files else None
    )
    order_record = data_order(settings, train_files)
    model.to(settings.device)
    optimizer = make_optimizer(model, settings)
    result = TrainResult(run_dir)
    start_epoch, start_batch, step = 0, 0, 0
    running: dict[str, float] = {}
    counted = 0
    checkpoint = find_checkpoint(run_dir)
    if resume and checkpoint is not None:
        trainable, opt_state, saved = load_checkpoint(checkpoint)
        if saved["model_settings"] != json.loads(json.dumps(asdict(model.settings))):
            raise SettingsError(f"--resume: the model settings differ from the checkpoint's in {run_dir}")
        if "data_order" in saved:
            check_resumable(saved["data_order"], order_record, run_dir)
        model.load_trainable_state_dict(trainable)
        optimizer.load_state_dict(opt_state)
        for group, fresh in zip(optimizer.param_groups, make_optimizer(model, settings).param_groups):
            group["lr"] = fresh["lr"]  # learning rates given now win over the checkpoint's
        start_epoch, step, result.history = saved["epoch"], saved["step"], saved["history"]
        start_batch = saved.get("batch", 0)
        running, counted = dict(saved.get("running", {})), saved.get("counted", 0)
    elif checkpoint is not None and not resume:
        raise SettingsError(f"{run_dir} already holds a training checkpoint: pass --resume to continue, or a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(run_dir)
    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)

    def checkpoint_now(epoch: int, batch: int) -> None:
        save_checkpoint(run_dir, model.trainable_state_dict(), optimizer, {
            "epoch": epoch, "batch": batch, "step": step, "history": result.history,
            "running": running, "counted": counted, "data_order": order_record,
            "model_settings": json.loads(json.dumps(asdict(model.settings))),
        }, keep=settings.keep_checkpoints)

    def unfinished(epoch: int) -> bool:
        return step < settings.max_steps if settings.max_steps is not None else epoch < settings.epochs

    epoch = start_epoch
    while unfinished(epoch):
        model.train()
        order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
        skip = start_batch if epoch == start_epoch else 0  # batches of this epoch done before an interruption
        order = order[skip * settings.batch_size :]
        remaining = steps_per_epoch - skip
        if settings.max_steps is not None:
            remaining = min(remaining, settings.max_steps - step)
        total = f"/{settings.epochs}" if settings.max_steps is None else ""
        bar = tqdm(_batches(train_data, settings.batch_size, pad_id, order), total=remaining,
                   desc=f"epoch {epoch + 1}{total}", disable=not progress, leave=False)
        if skip == 0:
            running, counted = {}, 0
        seen = 0
        for batch in bar:
            if settings.max_steps is not None and step >= settings.max_steps:
                break
            # dropout inside the 2d autoencoders: seeded per batch, so a resumed run draws the same masks
            torch.manual_seed(settings.seed * 100_003 + epoch * 10_007 + skip + seen)
            losses = compute_losses(model, _to(batch, settings.device), settings)
            del losses["logits"]
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer_step(optimizer, settings.grad_clip)
            step += 1
            seen += 1
            counted += 1
            for key, value in losses.items():
                running[key] = running.get(key, 0.0) + float(value.detach())
            bar.set_postfix({k: f"{v / counted:.3f}" for k, v in running.items() if k != "alpha_reg"})
            if settings.save_every and step % settings.save_every == 0 and skip + seen < steps_per_epoch:
                checkpoint_now(epoch, skip + seen)
        bar.close()
        done = skip + seen
        finished = done >= steps_per_epoch
        record = {"epoch": epoch + 1 if finished else epoch + done / steps_per_epoch, "step": step,
                  **{f"train_{k}": v / max(counted, 1) for k, v in running.items()}}
        if valid_data is not None:
            record.update(validate(model, valid_data, settings, pad_id))
        result.history.append(record)
        if finished:
            running, counted = {}, 0
            epoch += 1
            checkpoint_now(epoch, 0)
        else:  # stopped inside the epoch (max_steps reached): a resume continues this epoch
            checkpoint_now(epoch, done)
            break
    result.steps, result.seconds = step, time.perf_counter() - started
    model.eval()
    model.save_pretrained(run_dir)
    (run_dir / RUN_FILE).write_text(json.dumps({
        "train_settings": asdict(settings), "train_files": _absolute(train_files),
        "valid_files": _absolute(valid_files or {}),
        "history": result.history, "steps": step, "seconds_this_session": result.seconds,
    }, indent=2, sort_keys=True))
    return result
