"""What `distill` measures and writes: the student against its teacher on held-out text, what a top-k cache
hides, the summary tables, `distill.json` and the model card."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from superpose.core.settings import torch_dtype
from superpose.evaluation.scoring import scoring_batches
from superpose.model.model_card import write_card
from superpose.training.distill_folder import RunInfo
from superpose.training.losses import distill_kl, next_scored, topk_kl
from superpose.training.student import save_student
from superpose.training.teacher_cache import teacher_logits

DISTILL_FILE = "distill.json"


@torch.no_grad()
def evaluate_student(student, teacher, blocks: dict[str, list[torch.Tensor]], pad_id: int, batch_size: int,
                     device: torch.device) -> dict[str, dict]:
    """Per file: the student's and the teacher's token-weighted perplexity and the student's KL to the teacher."""
    from superpose.core.metrics import LMScore

    result = {}
    for name, rows in blocks.items():
        student_score, teacher_score, kl_sum, tokens = LMScore(), LMScore(), 0.0, 0
        for _, batch in scoring_batches(rows, batch_size, pad_id, device):
            ids, mask = batch.input_ids, batch.attention_mask
            logits = student(input_ids=ids, attention_mask=mask).logits
            student_score.update(logits, batch.labels)
            if teacher is not None:
                served = teacher_logits(teacher, ids, mask)
                teacher_score.update(served, batch.labels)
                count = int(next_scored(batch.labels).sum())
                kl_sum += float(distill_kl(logits, torch.log_softmax(served.float(), -1), batch.labels)) * count
                tokens += count
        result[name] = {"student_ppl": student_score.ppl, "tokens": student_score.total_tokens}
        if teacher is not None:
            result[name].update(teacher_ppl=teacher_score.ppl, kl_to_teacher=kl_sum / max(tokens, 1),
                                gap_to_teacher=student_score.ppl / teacher_score.ppl)  # × the teacher's perplexity
    return result


@torch.no_grad()
def teacher_kl(teacher, student, blocks: list[torch.Tensor], pad_id: int, temperature: float = 1.0,
               batch_size: int = 8, top_k: int | None = None) -> dict[str, float]:
    """Token-weighted KL(teacher ‖ student) over `blocks` (full vocabulary, and over k + 1 outcomes when `top_k`),
    and the teacher's mass outside its top k: what the truncation costs."""
    from superpose.training.teacher_cache import teacher_log_probs, top_k_entries

    device = next(student.parameters()).device
    totals = {"kl_full": 0.0, "kl_topk": 0.0, "rest_mass": 0.0}
    tokens = 0
    for _, batch in scoring_batches(blocks, batch_size, pad_id, device):
        ids, mask = batch.input_ids, batch.attention_mask
        log_p = teacher_log_probs(teacher, ids, mask, temperature)
        logits = student(input_ids=ids, attention_mask=mask).logits
        count = int(next_scored(batch.labels).sum())
        totals["kl_full"] += float(distill_kl(logits, log_p, batch.labels, temperature)) * count
        if top_k:
            entries = top_k_entries(log_p, top_k)
            totals["kl_topk"] += float(topk_kl(logits, *entries, batch.labels, temperature)) * count
            rest = entries[2][:, :-1].exp()[next_scored(batch.labels).to(device)]
            totals["rest_mass"] += float(rest.sum())
        tokens += count
    result = {key: value / max(tokens, 1) for key, value in totals.items()}
    if not top_k:
        result = {"kl_full": result["kl_full"]}
    result["tokens"] = tokens
    return result



def evaluation_table(evaluation: dict) -> str:
    from superpose.core.text_tables import format_table

    keys = ["student_ppl", "teacher_ppl", "gap_to_teacher", "kl_to_teacher", "tokens"]
    rows = [[name, *[values.get(k, float("nan")) for k in keys]] for name, values in evaluation.items()]
    return format_table(["valid file", *keys], rows,
                        title="held-out text (token-weighted perplexity; gap = student / teacher perplexity; "
                              "KL(teacher ‖ student) per token, T = 1)")


def describe_truncation(record: dict) -> str:
    return (f"top-{record['k']} teacher: the kept tokens hold {100 * record['kept_mass_mean']:.2f} % of the teacher's "
            f"mass on average (lowest {100 * record['kept_mass_min']:.2f} %). On {record['tokens']} held-out tokens "
            f"the student's KL to the teacher is {record['kl_full']:.4f} over the full vocabulary and "
            f"{record['kl_topk']:.4f} over the k kept tokens + the rest: the truncated loss does not see "
            f"{record['kl_full'] - record['kl_topk']:.4f} nats per token. Cache: {record['cache_mb']:.1f} MB for "
            f"{record['cached_blocks']} blocks, against {record['full_mb']:.1f} MB for the full distributions.")


def write_outputs(result, student, tokenizer, info: RunInfo, run_dir: Path,
                  settings, train_files: dict[str, str], valid_files: dict[str, str]) -> None:
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
    write_card(result.out_dir, distill_card(run_dir, info, settings, train_files, valid_files, result))


def distill_card(run_dir: Path, info: RunInfo, settings, train_files: dict[str, str],
                  valid_files: dict[str, str], result) -> str:
    from superpose.model.model_card import one_stack_card

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
