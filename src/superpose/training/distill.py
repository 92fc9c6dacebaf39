"""Distil a superposed model into one stack: the hard merge that keeps what the superposed model knows.

The student starts as a copy of one of the run's stacks (`start`), all weights or a PEFT LoRA adapter
(merged into the weights at the end), and learns

    loss = λ · T² · KL(p_T ‖ q_T) + (1 − λ) · LM(text)

per scored position, where p_T is the superposed teacher's next-token distribution at temperature T,
q_T the student's, and LM the student's next-token cross-entropy on the text. λ = 0 is plain replay
(fine-tuning on the text alone, no teacher run). The teacher may be read from a top-k cache
(`teacher_cache`). The result is a plain Hugging Face checkpoint: `AutoModelForCausalLM.from_pretrained`
loads it with `transformers` alone.

Dropout is off in the student (it trains in eval mode), so several processes, accumulated micro-batches
and a resumed run all give the weights of one uninterrupted single-batch run.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from superpose.core.loading import load_tokenizer
from superpose.core.settings import (DATA_ORDER_KEYS, DTYPES, MIXED_PRECISION, SettingsError, check_choices,
                                     check_counts, check_positive, coerce_numbers, setting, torch_dtype)
from superpose.data.text import DataError, collate
from superpose.model.superposed import SuperposedModel
from superpose.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from superpose.training.distill_folder import (RunInfo, finish_work, inspect_run, prepare_out_dir,
                                               weights_fingerprint, work_folder)
from superpose.training.distributed import setup_processes
from superpose.training.loop import (LoopState, describe_throughput, epoch_order, history_table, run_epochs,
                                     throughput_record)
from superpose.training.model_card import write_card
from superpose.training.resume import check_resumable, data_order
from superpose.training.step import autocast, resolve_mixed_precision, sum_gradients
from superpose.training.teacher_cache import build_topk_cache, kept_mass, teacher_log_probs, teacher_logits

DISTILL_FILE = "distill.json"
# settings a resumed distillation may change (the others fix what each step computes)
RESUMABLE_CHANGES = ("max_steps", "epochs", "save_every", "keep_checkpoints", "device", "max_valid_blocks")


@dataclass
class DistillSettings:
    """How a superposed run is distilled into one stack; validated here, recorded in DIR/distill.json."""

    start: str | None = setting(None, "the run's stack the student starts from: base or an expert's name "
                                      "(default base)")
    lora: int | None = setting(None, "LoRA rank (PEFT, every linear layer but the head), merged into the weights "
                                     "at the end (default: train all weights)")
    lora_alpha: float | None = setting(None, "LoRA scale numerator (default 2 x rank)")
    max_steps: int | None = setting(None, "optimiser steps: epochs repeat until it is reached")
    epochs: int = setting(1, "passes over the text (default 1; ignored when --max-steps is given)")
    batch_size: int = setting(32, "sequences per micro-batch and process (default 32)")
    grad_accum: int = setting(1, "micro-batches per optimiser step (default 1)")
    block_size: int = setting(128, "tokens per sequence (default 128)")
    lr: float | None = setting(None, "peak learning rate (default 5e-4 all weights, 2e-3 LoRA); linear warmup over "
                                     "the first 10 % of steps, then cosine decay to 10 %")
    weight_decay: float = setting(0.01, "AdamW weight decay (default 0.01)")
    grad_clip: float = setting(1.0, "max gradient norm (default 1.0)")
    seed: int = setting(0, "random seed of the data order and the LoRA init (default 0)")
    teacher_weight: float = setting(1.0, "λ: λ·KL(teacher ‖ student) + (1 − λ)·LM loss; 0 = plain replay, "
                                         "no teacher (default 1)")
    temperature: float = setting(1.0, "softmax temperature of the KL term, scaled by T² (default 1)")
    top_k: int | None = setting(None, "compute the teacher's top-k log-probs once into DIR/.superpose/teacher-topk "
                                      "(safetensors shards) and reuse them every epoch (default: live teacher)")
    max_train_blocks: int | None = setting(None, "cap on training blocks per file")
    max_valid_blocks: int | None = setting(64, "cap on validation blocks per file (default 64)")
    save_every: int | None = setting(None, "also checkpoint every N steps (default: at the end of each epoch)")
    keep_checkpoints: int = setting(2, "latest checkpoints kept (default 2)")
    device: str | None = setting(None, "torch device (default: cuda when available, else cpu)")
    mixed_precision: str | None = setting(None, "bf16: autocast the forward passes (default bf16 on CUDA)",
                                          MIXED_PRECISION)
    dtype: str | None = setting(None, "dtype of the teacher's stacks and of the saved student (default: the start "
                                      "stack's own checkpoint dtype); the student trains in float32", DTYPES)

    def __post_init__(self) -> None:
        coerce_numbers(self)
        check_counts(self, ("epochs", "batch_size", "block_size", "keep_checkpoints", "grad_accum"),
                     ("max_steps", "lora", "top_k", "max_train_blocks", "max_valid_blocks", "save_every"))
        for name in ("lr", "lora_alpha", "grad_clip", "temperature"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("teacher_weight", self.teacher_weight, allow_zero=True)
        if self.teacher_weight > 1:
            raise SettingsError(f"teacher_weight λ mixes KL and LM loss, so it lies in [0, 1]; got {self.teacher_weight}")
        if self.lora_alpha is not None and self.lora is None:
            raise SettingsError("lora_alpha is the scale of a LoRA adapter: give --lora R too")
        if self.top_k is not None and self.teacher_weight == 0:
            raise SettingsError("--top-k caches the teacher, and --teacher-weight 0 (replay) runs no teacher")
        check_choices(self)
        if self.start is not None and (not isinstance(self.start, str) or not self.start):
            raise SettingsError(f"start must name a stack; got {self.start!r}")

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-3 if self.lora else 5e-4)

    @property
    def resolved_lora_alpha(self) -> float | None:
        return None if self.lora is None else (self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora)


# ---- the loss -------------------------------------------------------------------------------------------


def _scored(labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) positions whose next token is scored (not padding)."""
    return labels[:, 1:] != -100


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_v p_v (log p_v − log q_v) over the last axis; outcomes with p_v = 0 add nothing (no 0·∞)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def distill_kl(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """T² · mean over scored positions of KL(p_T ‖ q_T), both over the full vocabulary (float32).

    `teacher_log_probs` (B, T, V) are already tempered (`teacher_cache.tempered_log_probs`); position t of
    both predicts token t + 1.
    """
    scored = _scored(labels)  # (B, T-1)
    log_q = torch.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    log_p = teacher_log_probs[:, :-1].float().to(log_q.device)
    kl = _kl_terms(log_p, log_q)  # (B, T-1)
    mask = scored.to(kl.device)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def topk_kl(student_logits: torch.Tensor, indices: torch.Tensor, kept: torch.Tensor, rest: torch.Tensor,
            labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · mean KL over k + 1 outcomes (the teacher's k kept tokens and "any other"), from a top-k cache.

    `indices`, `kept` (B, T, k) and `rest` (B, T) are the teacher's tempered entries; the student's
    "other" mass is the logsumexp of its log-probabilities outside the kept tokens (exact, no 1 − Σ).
    """
    scored = _scored(labels)
    log_q = torch.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    idx = indices[:, :-1].to(log_q.device)
    q_kept = log_q.gather(-1, idx)  # (B, T-1, k)
    q_rest = log_q.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)  # (B, T-1, 1)
    log_p = torch.cat([kept[:, :-1], rest[:, :-1, None]], -1).float().to(log_q.device)  # (B, T-1, k+1)
    kl = _kl_terms(log_p, torch.cat([q_kept, q_rest], -1))
    mask = scored.to(kl.device)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def lm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over scored positions (the replay loss)."""
    return F.cross_entropy(student_logits[:, :-1].reshape(-1, student_logits.shape[-1]).float(),
                           labels[:, 1:].reshape(-1).to(student_logits.device), ignore_index=-100)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_weight: float, temperature: float,
                 teacher_log_probs: torch.Tensor | None = None,
                 cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{"loss": λ·KL + (1 − λ)·LM, "kl", "lm"}: the teacher given live (`teacher_log_probs`) or from the cache."""
    lm = lm_loss(student_logits, labels)
    if teacher_weight == 0:
        kl = lm.new_zeros(())
    elif cached is not None:
        kl = topk_kl(student_logits, *cached, labels, temperature)
    else:
        kl = distill_kl(student_logits, teacher_log_probs, labels, temperature)
    return {"loss": teacher_weight * kl + (1 - teacher_weight) * lm, "kl": kl, "lm": lm}


# ---- the student ----------------------------------------------------------------------------------------


def make_student(stack: torch.nn.Module, settings: DistillSettings) -> torch.nn.Module:
    """A float32 trainable copy of `stack`; with `lora`, wrapped in a PEFT LoRA adapter (only it trains)."""
    student = copy.deepcopy(stack).float()
    student.requires_grad_(True)
    if settings.lora is None:
        return student.eval()
    from peft import LoraConfig, get_peft_model

    student.requires_grad_(False)
    torch.manual_seed(settings.seed)  # LoRA's A matrices are random
    config = LoraConfig(r=settings.lora, lora_alpha=settings.resolved_lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear", bias="none")
    import warnings

    with warnings.catch_warnings():  # GPT-2's Conv1D layers: PEFT sets fan_in_fan_out itself and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(student, config).eval()


def trainable_parameters(student: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of what trains (tied weights once: named_parameters drops duplicates)."""
    return {name: p for name, p in student.named_parameters() if p.requires_grad}


def merged_model(student: torch.nn.Module) -> torch.nn.Module:
    """The plain model: a LoRA student's adapter folded into its weights (a copy; the student is kept)."""
    if hasattr(student, "merge_and_unload"):
        return copy.deepcopy(student).merge_and_unload()
    return student


def save_student(student: torch.nn.Module, out_dir: str | Path, tokenizer, dtype: torch.dtype) -> torch.nn.Module:
    """Write the plain checkpoint (weights in `dtype`, config, generation config) and the tokenizer."""
    plain = copy.deepcopy(merged_model(student)).to(dtype)
    plain.config.name_or_path = str(out_dir)
    plain.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return plain


def lr_factor(step: int, steps: int) -> float:
    """Linear warmup over the first 10 % of steps, then cosine decay to 10 % of the peak."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# ---- measurements ---------------------------------------------------------------------------------------


@torch.no_grad()
def teacher_kl(teacher, student, blocks: list[torch.Tensor], pad_id: int, temperature: float = 1.0,
               batch_size: int = 8, top_k: int | None = None) -> dict[str, float]:
    """Token-weighted KL(teacher ‖ student) over `blocks` (full vocabulary, and over k + 1 outcomes when `top_k`),
    and the teacher's mass outside its top k: what the truncation costs."""
    from superpose.training.teacher_cache import teacher_log_probs, top_k_entries

    device = next(student.parameters()).device
    totals = {"kl_full": 0.0, "kl_topk": 0.0, "rest_mass": 0.0}
    tokens = 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start : start + batch_size]
        batch = collate(chunk, [0] * len(chunk), pad_id)
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        log_p = teacher_log_probs(teacher, ids, mask, temperature)
        logits = student(input_ids=ids, attention_mask=mask).logits
        count = int(_scored(batch.labels).sum())
        totals["kl_full"] += float(distill_kl(logits, log_p, batch.labels, temperature)) * count
        if top_k:
            entries = top_k_entries(log_p, top_k)
            totals["kl_topk"] += float(topk_kl(logits, *entries, batch.labels, temperature)) * count
            rest = entries[2][:, :-1].exp()[_scored(batch.labels).to(device)]
            totals["rest_mass"] += float(rest.sum())
        tokens += count
    result = {key: value / max(tokens, 1) for key, value in totals.items()}
    if not top_k:
        result = {"kl_full": result["kl_full"]}
    result["tokens"] = tokens
    return result



# ---- the run --------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    out_dir: Path
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    steps_this_session: int = 0  # a resumed run trains only the steps its checkpoint had not
    seconds: float = 0.0
    throughput: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)  # per --valid file: student ppl, teacher ppl, KL to the teacher
    truncation: dict = field(default_factory=dict)  # with --top-k: what keeping k tokens costs
    is_main: bool = True

    def summary(self) -> str:
        parts = []
        if self.history:
            parts.append(history_table(self.history, f"distillation ({self.out_dir})"))
        if self.evaluation:
            parts.append(evaluation_table(self.evaluation))
        if self.truncation:
            parts.append(describe_truncation(self.truncation))
        if self.throughput:
            parts.append(describe_throughput(self.throughput))
        parts.append(f"{self.steps} steps in {self.seconds:.1f} s; a plain checkpoint in {self.out_dir} "
                     "(AutoModelForCausalLM.from_pretrained), with its model card README.md")
        return "\n".join(parts)


def evaluation_table(evaluation: dict) -> str:
    from superpose.core.text_tables import format_table

    keys = ["student_ppl", "teacher_ppl", "kl_to_teacher", "tokens"]
    rows = [[name, *[values.get(k, float("nan")) for k in keys]] for name, values in evaluation.items()]
    return format_table(["valid file", *keys], rows,
                        title="held-out text (token-weighted; KL(teacher ‖ student) per token, T = 1)")


def describe_truncation(record: dict) -> str:
    return (f"top-{record['k']} teacher: the kept tokens hold {100 * record['kept_mass_mean']:.2f} % of the teacher's "
            f"mass on average (lowest {100 * record['kept_mass_min']:.2f} %). On {record['tokens']} held-out tokens "
            f"the student's KL to the teacher is {record['kl_full']:.4f} over the full vocabulary and "
            f"{record['kl_topk']:.4f} over the k kept tokens + the rest: the truncated loss does not see "
            f"{record['kl_full'] - record['kl_topk']:.4f} nats per token. Cache: {record['cache_mb']:.1f} MB for "
            f"{record['cached_blocks']} blocks, against {record['full_mb']:.1f} MB for the full distributions.")


def _load_blocks(files: dict[str, str], tokenizer, block_size: int, max_blocks: int | None) -> dict[str, list]:
    from superpose.data.text import load_texts, tokenize_blocks

    return {name: tokenize_blocks(load_texts(path), tokenizer, block_size, max_blocks) for name, path in files.items()}


@torch.no_grad()
def evaluate_student(student, teacher, blocks: dict[str, list[torch.Tensor]], pad_id: int, batch_size: int,
                     device: torch.device) -> dict[str, dict]:
    """Per file: the student's and the teacher's token-weighted perplexity and the student's KL to the teacher."""
    from superpose.core.metrics import LMScore

    result = {}
    for name, rows in blocks.items():
        student_score, teacher_score, kl_sum, tokens = LMScore(), LMScore(), 0.0, 0
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size], [0] * len(rows[start : start + batch_size]), pad_id)
            ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
            logits = student(input_ids=ids, attention_mask=mask).logits
            student_score.update(logits, batch.labels.to(device))
            if teacher is not None:
                served = teacher_logits(teacher, ids, mask)
                teacher_score.update(served, batch.labels.to(device))
                count = int(_scored(batch.labels).sum())
                kl_sum += float(distill_kl(logits, torch.log_softmax(served.float(), -1), batch.labels)) * count
                tokens += count
        result[name] = {"student_ppl": student_score.ppl, "tokens": student_score.total_tokens}
        if teacher is not None:
            result[name].update(teacher_ppl=teacher_score.ppl, kl_to_teacher=kl_sum / max(tokens, 1))
    return result


def _needed_blocks(examples: int, global_batch: int, settings: DistillSettings, total_steps: int) -> list[int]:
    """The blocks the run will read, in the order of first use (the loop's seeded per-epoch orders)."""
    needed, seen = [], set()
    steps_per_epoch = math.ceil(examples / global_batch)
    epoch, step = 0, 0
    while step < total_steps and len(seen) < examples:
        order = epoch_order(examples, settings.seed, epoch)
        count = min(steps_per_epoch, total_steps - step)
        for block in order[: count * global_batch]:
            if block not in seen:
                seen.add(block)
                needed.append(block)
        step += count
        epoch += 1
    return needed


@dataclass
class _Student:
    """The model being trained, its trainable tensors (the LoRA adapter's, or every weight) and its optimiser."""

    model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer


def load_text(run_dir: Path, train_files: dict[str, str], valid_files: dict[str, str] | None,
              settings: DistillSettings):
    """(tokenizer, training blocks, validation blocks per file): the text first, so a bad file stops the run
    before any stack is loaded."""
    if not train_files:
        raise DataError("no training text: pass --train FILE (one or more)")
    tokenizer = load_tokenizer(str(run_dir))
    blocks = _load_blocks(train_files, tokenizer, settings.block_size, settings.max_train_blocks)
    train_blocks = [block for rows in blocks.values() for block in rows]
    valid_blocks = _load_blocks(valid_files or {}, tokenizer, settings.block_size, settings.max_valid_blocks)
    return tokenizer, train_blocks, valid_blocks


def start_dtype(info: RunInfo) -> str:
    """The start stack's own checkpoint dtype (float32 when its config does not say, or is not local)."""
    from transformers import AutoConfig

    try:
        dtype = getattr(AutoConfig.from_pretrained(info.start_path), "dtype", None)
    except (OSError, ValueError, TypeError):
        return "float32"
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    return name if name in DTYPES else "float32"


def load_models(run_dir: Path, info: RunInfo, settings: DistillSettings, device: torch.device, teacher=None):
    """(teacher or None, the stack the student copies). Replay runs no teacher, so it loads the start stack alone."""
    dtype = torch_dtype(settings.dtype)
    if settings.teacher_weight == 0:
        if teacher is not None:
            return None, teacher.stack_models[info.index]
        from superpose.core.loading import load_causal_lm

        return None, load_causal_lm(info.start_path, dtype, None if device.type == "cpu" else device)
    if teacher is None:
        teacher = SuperposedModel.from_pretrained(run_dir, dtype=dtype, device=device)
    teacher.eval()
    return teacher, teacher.stack_models[info.index]


def new_student(stack, settings: DistillSettings, device: torch.device) -> _Student:
    model = make_student(stack, settings).to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.resolved_lr, betas=(0.9, 0.95),
                                  weight_decay=settings.weight_decay)
    return _Student(model, params, optimizer)


def run_identity(run_dir: Path, info: RunInfo, settings: DistillSettings, train_files: dict[str, str], processes,
                 tokenizer) -> dict:
    """What a resumed distillation must share with the interrupted one: data order, teacher (its weights too),
    settings."""
    order_keys = types.SimpleNamespace(**{key: getattr(settings, key, None) for key in DATA_ORDER_KEYS})
    identity = data_order(order_keys, train_files, processes.count, tokenizer)
    identity["teacher"] = {"run": str(run_dir.resolve()), "stacks": info.stack_names,
                           "weights": weights_fingerprint(run_dir, info)}
    identity["distill"] = {k: v for k, v in settings.__dict__.items() if k not in RESUMABLE_CHANGES}
    return json.loads(json.dumps(identity))


def restore_student(work: Path, resume: bool, identity: dict, student: _Student) -> LoopState:
    checkpoint = find_checkpoint(work) if resume else None
    if checkpoint is None:
        return LoopState()
    trainable, opt_state, saved = load_checkpoint(checkpoint)
    check_resumable(saved.get("identity", {}), identity, work.parent)
    with torch.no_grad():
        for name, param in student.params.items():
            param.copy_(trainable[name].to(param.device, param.dtype))
    student.optimizer.load_state_dict(opt_state)
    return LoopState.from_record(saved)


def cached_teacher(teacher, train_blocks: list[torch.Tensor], identity: dict, work: Path, settings: DistillSettings,
                   global_batch: int, total_steps: int, pad_id: int, processes, progress: bool):
    """With --top-k: the teacher's top-k log-probs of the blocks the run reads (built once, by the main process
    first), and what keeping k tokens holds of its mass. Else (None, {})."""
    if settings.teacher_weight == 0 or not settings.top_k:
        return None, {}
    needed = _needed_blocks(len(train_blocks), global_batch, settings, total_steps)
    fingerprint = {"run": identity["teacher"], "data": {k: identity[k] for k in ("train_files", "tokenizer")},
                   "block_size": settings.block_size, "max_train_blocks": settings.max_train_blocks}
    build = dict(k=settings.top_k, temperature=settings.temperature, fingerprint=fingerprint,
                 batch_size=settings.batch_size, pad_id=pad_id, device=processes.device)
    if processes.is_main:
        cache = build_topk_cache(teacher, train_blocks, needed, work, progress=progress, **build)
    processes.barrier()
    if not processes.is_main:  # the shards are there now: this only reads them
        cache = build_topk_cache(teacher, train_blocks, needed, work, progress=False, **build)
    mass = kept_mass(cache)
    return cache, {"k": settings.top_k, "kept_mass_mean": mass["mean"], "kept_mass_min": mass["min"],
                   "cached_blocks": len(cache),
                   "cache_mb": sum(p.stat().st_size for p in cache.folder.glob("shard-*")) / 2**20,
                   "full_mb": mass["positions"] * teacher.config.vocab_size * 4 / 2**20}


@dataclass
class DistillStep:
    """One optimiser step on a global batch: each chunk's loss weighted by its share of the scored positions,
    gradients summed over processes, so any split of the batch gives the step of one whole batch."""

    student: _Student
    teacher: object
    cache: object
    train_blocks: list[torch.Tensor]
    settings: DistillSettings
    processes: object
    state: LoopState
    total_steps: int
    pad_id: int
    precision: str

    def __call__(self, rows: list[int], first: int, epoch: int) -> tuple[dict[str, float], int]:
        settings, optimizer, size = self.settings, self.student.optimizer, self.settings.batch_size
        for group in optimizer.param_groups:
            group["lr"] = settings.resolved_lr * lr_factor(self.state.step, self.total_steps)
        lengths = [self.train_blocks[i].numel() for i in rows]
        scored_total = sum(lengths) - len(rows)
        optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(3, dtype=torch.float64)
        for chunk in range(self.processes.index, math.ceil(len(rows) / size), self.processes.count):
            picked = rows[chunk * size : (chunk + 1) * size]
            share = (sum(lengths[chunk * size : (chunk + 1) * size]) - len(picked)) / scored_total
            losses = self._losses(picked)
            (losses["loss"] * share).backward()
            totals += torch.tensor([float(losses[k].detach()) * share for k in ("loss", "kl", "lm")],
                                   dtype=torch.float64)
        totals = sum_gradients(optimizer, totals, self.processes)
        torch.nn.utils.clip_grad_norm_(list(self.student.params.values()), settings.grad_clip)
        optimizer.step()
        record = dict(zip(("loss", "kl", "lm"), totals.tolist()))
        if settings.teacher_weight == 0:
            del record["kl"]
        return record, sum(lengths)

    def _losses(self, picked: list[int]) -> dict[str, torch.Tensor]:
        device, settings = self.processes.device, self.settings
        batch = collate([self.train_blocks[i] for i in picked], [0] * len(picked), self.pad_id)
        ids, mask, labels = batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device)
        with autocast(self.precision, device):
            live = cached = None
            if self.cache is not None:
                cached = tuple(t.to(device) for t in self.cache.lookup(picked, ids.shape[1]))
            elif settings.teacher_weight > 0:
                live = teacher_log_probs(self.teacher, ids, mask, settings.temperature)
            logits = self.student.model(input_ids=ids, attention_mask=mask).logits
            return distill_loss(logits, labels, settings.teacher_weight, settings.temperature, live, cached)


def measure(result: "DistillResult", student: _Student, teacher, valid_blocks: dict, train_blocks: list,
            settings: DistillSettings, pad_id: int, precision: str, device: torch.device) -> None:
    """The student on held-out text (against the teacher), and with --top-k what the truncation hides."""
    uses_teacher = settings.teacher_weight > 0
    with autocast(precision, device):
        result.evaluation = evaluate_student(student.model, teacher if uses_teacher else None, valid_blocks, pad_id,
                                             settings.batch_size, device)
        if result.truncation:
            probe = [b for rows in valid_blocks.values() for b in rows][:16] or train_blocks[:16]
            measured = teacher_kl(teacher, student.model, probe, pad_id, settings.temperature, settings.batch_size,
                                  settings.top_k)
            result.truncation.update(kl_full=measured["kl_full"], kl_topk=measured["kl_topk"],
                                     tokens=measured["tokens"])


def write_outputs(result: "DistillResult", student: _Student, tokenizer, info: RunInfo, run_dir: Path,
                  settings: DistillSettings, train_files: dict[str, str], valid_files: dict[str, str]) -> None:
    """The plain checkpoint with its tokenizer, `distill.json` and the model card."""
    save_student(student.model, result.out_dir, tokenizer, torch_dtype(settings.dtype))
    record = {"run": str(run_dir.resolve()), "start": info.start_name, "settings": settings.__dict__,
              "train_files": {k: str(Path(v).resolve()) for k, v in train_files.items()},
              "valid_files": {k: str(Path(v).resolve()) for k, v in valid_files.items()},
              "history": result.history, "steps": result.steps, "steps_this_session": result.steps_this_session,
              "evaluation": result.evaluation,
              "truncation": result.truncation, "throughput_this_session": result.throughput,
              "seconds_this_session": result.seconds}
    (result.out_dir / DISTILL_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    write_card(result.out_dir, _distill_card(run_dir, info, settings, train_files, valid_files, result))


def distill(run_dir: str | Path, train_files: dict[str, str], valid_files: dict[str, str] | None,
            out_dir: str | Path, settings: DistillSettings, resume: bool = False, progress: bool = True,
            teacher=None, overwrite: bool = False, keep_work: bool = False) -> DistillResult:
    """Train one stack on the superposed run's next-token distributions and write it as a plain checkpoint.

    `teacher` may be passed as a loaded `SuperposedModel` (else it is loaded from `run_dir`; replay loads only
    the start stack). Launched as several processes (`accelerate launch` / `torchrun`), each step sees
    batch_size x processes x grad_accum blocks and only the main process writes. A checkpoint is written into
    `out_dir/.superpose/` after every epoch, every `save_every` steps and when the step budget ends;
    `resume=True` continues exactly from the last one. The work folder is removed at the end unless
    `keep_work`. An `out_dir` holding other files is refused unless `overwrite`.
    """
    started = time.perf_counter()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    info = inspect_run(run_dir, settings.start, settings.block_size, teacher)  # before any tokenising or loading
    prepare_out_dir(out_dir, run_dir, info, resume, overwrite)
    if settings.dtype is None:
        settings = dataclasses.replace(settings, dtype=start_dtype(info))
    work = work_folder(out_dir)
    processes = setup_processes(settings.device)
    device = processes.device
    tokenizer, train_blocks, valid_blocks = load_text(run_dir, train_files, valid_files, settings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    teacher, stack = load_models(run_dir, info, settings, device, teacher)
    precision = resolve_mixed_precision(settings, device, next(stack.parameters()).dtype)
    student = new_student(stack, settings, device)
    identity = run_identity(run_dir, info, settings, train_files, processes, tokenizer)
    state = restore_student(work, resume, identity, student)
    first_step = state.step
    for param in student.params.values():
        processes.broadcast_(param.data)
    processes.barrier()  # every process has read the output folder before the main process writes to it
    if processes.is_main:
        work.mkdir(parents=True, exist_ok=True)
    global_batch = settings.batch_size * processes.count * settings.grad_accum
    total_steps = settings.max_steps or settings.epochs * math.ceil(len(train_blocks) / global_batch)
    cache, truncation = cached_teacher(teacher, train_blocks, identity, work, settings, global_batch, total_steps,
                                       pad_id, processes, progress)
    step = DistillStep(student, teacher, cache, train_blocks, settings, processes, state, total_steps, pad_id,
                       precision)

    def save() -> None:
        if processes.is_main:
            save_checkpoint(work, {name: p.detach() for name, p in student.params.items()}, student.optimizer,
                            {**state.record(), "identity": identity}, keep=settings.keep_checkpoints)

    run_epochs(state, len(train_blocks), global_batch, settings, step, save, show=progress and processes.is_main)
    result = DistillResult(out_dir, state.history, state.step, steps_this_session=state.step - first_step,
                           truncation=truncation, is_main=processes.is_main,
                           throughput=throughput_record(state, processes, global_batch, settings.grad_accum, precision))
    student.model.eval()
    if processes.is_main:
        measure(result, student, teacher, valid_blocks, train_blocks, settings, pad_id, precision, device)
        result.seconds = time.perf_counter() - started
        write_outputs(result, student, tokenizer, info, run_dir, settings, train_files, valid_files or {})
        finish_work(out_dir, keep_work)
    processes.barrier()
    result.seconds = time.perf_counter() - started
    return result


def _distill_card(run_dir: Path, info: RunInfo, settings: DistillSettings, train_files: dict[str, str],
                  valid_files: dict[str, str], result: DistillResult) -> str:
    from superpose.training.model_card import one_stack_card

    what = ("replay: fine-tuned on the text alone (teacher weight 0)" if settings.teacher_weight == 0 else
            f"distilled from the superposed model (λ = {settings.teacher_weight:g}, T = {settings.temperature:g})")
    summary = (f"One stack, {what}, starting from its `{info.start_name}` stack"
               f"{f' with a rank-{settings.lora} LoRA adapter merged into the weights' if settings.lora else ''}. "
               "A plain checkpoint: `AutoModelForCausalLM.from_pretrained(folder)` with `transformers` alone.")
    extra = {"Training": f"{result.steps} steps; last record: `{result.history[-1] if result.history else {}}`"}
    if result.truncation:
        extra["Teacher cache"] = describe_truncation(result.truncation)
    data = {**{f"train {k}": str(Path(v).resolve()) for k, v in train_files.items()},
            **{f"valid {k}": str(Path(v).resolve()) for k, v in valid_files.items()}}
    return one_stack_card(kind="distilled" if settings.teacher_weight > 0 else "replay", run_dir=run_dir,
                          config=info.config, summary=summary, settings=settings.__dict__, data=data, extra=extra,
                          evaluation=evaluation_table(result.evaluation) if result.evaluation else None)



__all__ = ["DistillSettings", "distill_kl", "topk_kl", "lm_loss", "distill_loss", "make_student", "merged_model",
           "save_student", "teacher_kl", "trainable_parameters", "DISTILL_FILE", "distill",
           "DistillResult", "evaluate_student"]
