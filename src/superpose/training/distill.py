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

import dataclasses
import hashlib
import json
import math
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from superpose.core.loading import load_tokenizer
from superpose.core.settings import (
    DTYPES,
    Dtype,
    SettingsError,
    check_counts,
    check_positive,
    setting,
    torch_dtype,
)
from superpose.data.text import DataError, collate
from superpose.model.superposed import SuperposedModel
from superpose.training.blocks import load_labelled
from superpose.training.checkpoint import find_checkpoint, save_checkpoint
from superpose.training.distill_folder import (
    RunInfo,
    finish_work,
    inspect_run,
    prepare_out_dir,
    weights_fingerprint,
    work_folder,
)
from superpose.training.distill_report import (
    DISTILL_FILE,
    describe_truncation,
    evaluate_student,
    evaluation_table,
    teacher_kl,
    write_outputs,
)
from superpose.training.distributed import setup_processes
from superpose.training.loop import (
    LoopState,
    describe_throughput,
    epoch_order,
    history_table,
    resume_from,
    run_epochs,
    throughput_record,
)
from superpose.training.losses import distill_kl, distill_loss, lm_loss, topk_kl
from superpose.training.resume import data_order
from superpose.training.settings import DATA_ORDER_KEYS, LoopSettings
from superpose.training.step import autocast, optimizer_step, process_chunks, resolve_mixed_precision, sum_gradients
from superpose.training.student import (
    Student,
    lr_factor,
    make_student,
    merged_model,
    new_student,
    save_student,
    trainable_parameters,
)
from superpose.training.teacher_cache import build_topk_cache, kept_mass, teacher_log_probs

# settings a resumed distillation may change (the others fix what each step computes)
RESUMABLE_CHANGES = ("max_steps", "epochs", "save_every", "keep_checkpoints", "device", "max_valid_blocks")


@dataclass
class DistillSettings(LoopSettings):
    """How a superposed run is distilled into one stack; validated here, recorded in DIR/distill.json. The loop's
    own settings (steps, batches, checkpoints, `switch_rate`, device, ...) are `LoopSettings`', shared with train."""

    switch_rate: float = setting(0.2, "share of training blocks replaced by code-switched blocks built from the "
                                      "--train files, so the student sees its teacher switch (default 0.2)")
    start: str | None = setting(None, "the run's stack the student starts from: base or an expert's name "
                                      "(default: the first expert; from the base measured worse on every set)")
    lora: int | None = setting(None, "LoRA rank (PEFT, every linear layer but the head), merged into the weights "
                                     "at the end (default: train all weights)")
    lora_alpha: float | None = setting(None, "LoRA scale numerator (default 2 x rank)")
    lr: float | None = setting(None, "peak learning rate (default 1e-3 all weights, 2e-3 LoRA); linear warmup over "
                                     "the first 10 % of steps, then cosine decay to 10 %")
    teacher_weight: float = setting(0.2, "λ: λ·KL(teacher ‖ student) + (1 − λ)·LM loss; 0 = plain replay, "
                                         "no teacher; 1 = pure imitation (default 0.2)")
    temperature: float = setting(1.0, "softmax temperature of the KL term, scaled by T² (default 1)")
    top_k: int | None = setting(None, "compute the teacher's top-k log-probs once into DIR/.superpose/teacher-topk "
                                      "(safetensors shards) and reuse them every epoch (default: live teacher)")
    dtype: Dtype | None = setting(None, "dtype of the teacher's stacks and of the saved student (default: the start "
                                        "stack's own checkpoint dtype); the student trains in float32")

    def __post_init__(self) -> None:
        self.check_loop()
        check_counts(self, (), ("lora", "top_k"))
        for name in ("lr", "lora_alpha", "temperature"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_positive("teacher_weight", self.teacher_weight, allow_zero=True)
        if self.teacher_weight > 1:
            raise SettingsError(f"teacher_weight λ mixes KL and LM loss, so it lies in [0, 1]; "
                                f"got {self.teacher_weight}")
        if self.lora_alpha is not None and self.lora is None:
            raise SettingsError("lora_alpha is the scale of a LoRA adapter: give --lora R too")
        if self.top_k is not None and self.teacher_weight == 0:
            raise SettingsError("--top-k caches the teacher, and --teacher-weight 0 (replay) runs no teacher")
        if self.start is not None and (not isinstance(self.start, str) or not self.start):
            raise SettingsError(f"start must name a stack; got {self.start!r}")

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-3 if self.lora else 1e-3)

    @property
    def resolved_lora_alpha(self) -> float | None:
        return None if self.lora is None else (self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora)


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


def _load_blocks(files: dict[str, str], tokenizer, block_size: int, max_blocks: int | None) -> dict[str, list]:
    from superpose.data.text import load_texts, tokenize_blocks

    return {name: tokenize_blocks(load_texts(path), tokenizer, block_size, max_blocks) for name, path in files.items()}


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


def load_text(run_dir: Path, train_files: dict[str, str], valid_files: dict[str, str] | None,
              settings: DistillSettings):
    """(tokenizer, training blocks, validation blocks per file): the text first, so a bad file stops the run
    before any stack is loaded."""
    if not train_files:
        raise DataError("no training text: pass --train FILE (one or more)")
    tokenizer = load_tokenizer(str(run_dir))
    # train's builder: the files' blocks, a `switch_rate` share of them replaced by code-switched ones (the
    # files' names only tell the sources apart here: the student needs no labels)
    train_blocks = load_labelled(train_files, list(train_files), tokenizer, settings.block_size,
                                 settings.max_train_blocks, settings.switch_rate, settings.seed).blocks
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


def run_identity(run_dir: Path, info: RunInfo, settings: DistillSettings, train_files: dict[str, str], processes,
                 tokenizer) -> dict:
    """What a resumed distillation must share with the interrupted one: data order, teacher (its weights too),
    settings."""
    order_keys = types.SimpleNamespace(**{key: getattr(settings, key, None) for key in DATA_ORDER_KEYS})
    identity = data_order(order_keys, train_files, processes.count, tokenizer)
    # its settings too: some (output temperatures) change the teacher's targets and no weight
    identity["teacher"] = {"run": str(run_dir.resolve()), "stacks": info.stack_names,
                           "weights": weights_fingerprint(run_dir, info), "settings": info.config.settings}
    identity["distill"] = {k: v for k, v in settings.__dict__.items() if k not in RESUMABLE_CHANGES}
    # the values used, not the flags: a default that moved between versions must not change a resumed run
    identity["distill"].update(lr=settings.resolved_lr, lora_alpha=settings.resolved_lora_alpha)
    return json.loads(json.dumps(identity))


def restore_student(work: Path, resume: bool, identity: dict, student: Student) -> LoopState:
    def load(trainable: dict, opt_state: dict, _saved: dict) -> None:
        with torch.no_grad():
            for name, param in student.params.items():
                param.copy_(trainable[name].to(param.device, param.dtype))
        student.optimizer.load_state_dict(opt_state)

    return resume_from(find_checkpoint(work) if resume else None, "identity", identity, work.parent, load)


def blocks_digest(blocks: list[torch.Tensor]) -> str:
    """sha256 of the training blocks' tokens, block by block."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(len(block).to_bytes(4, "little"))
        digest.update(block.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def cached_teacher(teacher, train_blocks: list[torch.Tensor], identity: dict, work: Path, settings: DistillSettings,
                   global_batch: int, total_steps: int, pad_id: int, processes, progress: bool):
    """With --top-k: the teacher's top-k log-probs of the blocks the run reads (built once, by the main process
    first), and what keeping k tokens holds of its mass. Else (None, {})."""
    if settings.teacher_weight == 0 or not settings.top_k:
        return None, {}
    needed = _needed_blocks(len(train_blocks), global_batch, settings, total_steps)
    # the teacher's scores depend on the run and the blocks' tokens alone (files, block size, cap, switched
    # blocks and their seed all show in the tokens)
    fingerprint = {"run": identity["teacher"], "blocks": blocks_digest(train_blocks)}
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

    student: Student
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
        for chunk, picked in process_chunks(rows, size, self.processes):
            share = (sum(lengths[chunk * size : (chunk + 1) * size]) - len(picked)) / scored_total
            losses = self._losses(picked)
            (losses["loss"] * share).backward()
            totals += torch.tensor([float(losses[k].detach()) * share for k in ("loss", "kl", "lm")],
                                   dtype=torch.float64)
        totals = sum_gradients(optimizer, totals, self.processes)
        optimizer_step(optimizer, settings.grad_clip)  # one parameter group: the global norm
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


def measure(result: DistillResult, student: Student, teacher, valid_blocks: dict, train_blocks: list,
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


__all__ = ["DistillSettings", "distill_kl", "topk_kl", "lm_loss", "distill_loss", "make_student", "merged_model",
           "save_student", "teacher_kl", "trainable_parameters", "DISTILL_FILE", "distill",
           "DistillResult", "evaluate_student"]
