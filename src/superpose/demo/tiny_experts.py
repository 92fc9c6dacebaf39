"""Build small offline experts: a shared BPE tokenizer, an English base GPT-2 and its fine-tune.

The superposition method needs a base causal LM and an expert fine-tuned from it (same tokenizer,
same architecture). The hub is not reachable offline, so this module trains both from plain text.
Every random draw goes through `torch.manual_seed` or a seeded `torch.Generator`, so rebuilding with
the same texts and recipe reproduces the same weights on the same machine.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from superpose.core.loading import load_causal_lm, load_tokenizer
from superpose.data.text import collate, tokenize_blocks
from superpose.evaluation.scoring import causal_lm, perplexities

EOS_TOKEN = "<|endoftext|>"
# Byte-level BPE starts from all 256 byte symbols plus the special token.
BASE_ALPHABET_SIZE = 256 + 1


def train_tokenizer(texts: list[str], vocab_size: int = 4096, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`: every string encodes losslessly, accents included.

    `<|endoftext|>` is the only special token and serves as eos, bos, unk and pad, as in GPT-2.
    BPE training has no randomness (ties between merges are broken by token ids), so the same
    texts always give the same vocabulary.
    """
    if vocab_size <= BASE_ALPHABET_SIZE:
        raise ValueError(f"vocab_size must exceed {BASE_ALPHABET_SIZE} (bytes + {EOS_TOKEN}), got {vocab_size}")
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
    )


@dataclass
class ExpertRecipe:
    """Size and training schedule of the base model and its expert fine-tune."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128
    vocab_size: int = 4096
    base_steps: int = 600
    finetune_steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3  # small models tolerate a high peak rate
    finetune_lr: float = 5e-4  # lower, so the expert stays close to the base it is blended with
    warmup_frac: float = 0.1
    dropout: float = 0.0  # the corpora are larger than one pass of training: no overfitting to fight
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "block_size", "vocab_size", "base_steps", "finetune_steps",
                     "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ExpertRecipe.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.block_size < 2:
            raise ValueError(f"block_size must be at least 2, got {self.block_size}")
        if self.vocab_size <= BASE_ALPHABET_SIZE:
            raise ValueError(f"vocab_size must exceed {BASE_ALPHABET_SIZE}, got {self.vocab_size}")
        for name in ("lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ExpertRecipe.{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: dict) -> ExpertRecipe:
        """Recipe from a dict such as `recipe.json`'s `recipe` entry; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ExpertRecipe fields: {', '.join(unknown)}")
        return cls(**values)


def make_model(recipe: ExpertRecipe, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 sized by the recipe, with special-token ids taken from the tokenizer."""
    torch.manual_seed(recipe.seed)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.block_size,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=recipe.dropout,
        embd_pdrop=recipe.dropout,
        attn_pdrop=recipe.dropout,
        **ids,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(**ids)
    return model


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of the peak: stable start, gentle finish."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_order(n_blocks: int, steps: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Indices of each step's batch: one seeded permutation per epoch, so every block is seen once per pass."""
    order: list[torch.Tensor] = []
    pending = torch.empty(0, dtype=torch.long)
    while len(order) < steps:
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(n_blocks, generator=generator)])
        order.append(pending[:batch_size])
        pending = pending[batch_size:]
    return order


def train_causal_lm(
    model: GPT2LMHeadModel,
    blocks: list[torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str,
    *,
    warmup_frac: float = 0.1,
    weight_decay: float = 0.01,
    progress: bool = True,
) -> list[float]:
    """Next-token training with AdamW, warmup + cosine decay and clipping at 1.0; returns per-step losses.

    The model is left in eval mode, ready to save or evaluate.
    """
    if steps <= 0 or batch_size <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if not blocks:
        raise ValueError("train_causal_lm needs at least one block")
    torch.manual_seed(seed)  # dropout, if any
    generator = torch.Generator().manual_seed(seed)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup = max(1, int(steps * warmup_frac))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup))
    history: list[float] = []
    running = None
    model.train()
    bar = tqdm(batch_order(len(blocks), steps, batch_size, generator), desc=desc, disable=not progress)
    for indices in bar:
        batch = collate([blocks[i] for i in indices.tolist()], [0] * len(indices), pad_id)
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
        running = history[-1] if running is None else 0.95 * running + 0.05 * history[-1]
        bar.set_postfix(loss=f"{running:.3f}")
    model.eval()
    return history


@torch.no_grad()
def held_out_ppl(model: GPT2LMHeadModel, blocks: list[torch.Tensor], batch_size: int = 16) -> float:
    """Perplexity weighted by predicted tokens (not by batch), so a short last block counts for little."""
    if not blocks:
        raise ValueError("held_out_ppl needs at least one block")
    was_training = model.training
    model.eval()
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    score = perplexities({"model": causal_lm(model)}, blocks, pad_id, batch_size, model.device)["model"]
    model.train(was_training)
    return score.ppl


def save_model(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    """Weights (safetensors), config, generation config and tokenizer in one folder `from_pretrained` loads."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def loss_summary(history: list[float], seconds: float) -> dict[str, float | int]:
    """The few numbers of a training run worth keeping next to the weights."""
    return {"steps": len(history), "loss_first": history[0], "loss_last": history[-1], "seconds": round(seconds, 2)}


def check_expert_name(name: str) -> None:
    """An expert is saved as `out_dir/<name>`, next to `base`: a path or the base's own name would clobber it."""
    if not isinstance(name, str) or name in ("base", "", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"expert name must be a plain folder name other than 'base', got {name!r}")


def finetune_and_save(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    out_dir: Path,
    recipe: ExpertRecipe,
    name: str,
    *,
    progress: bool = True,
) -> tuple[Path, int, dict[str, float | int]]:
    """Fine-tune `model` in place on `texts` and save it as `out_dir/<name>`; the one fine-tune recipe.

    Shared by `build_experts` and `finetune_expert` so every expert sees the same seed (`seed + 1`),
    rate and schedule. Returns the folder, the number of training blocks and the loss summary.
    """
    blocks = tokenize_blocks(texts, tokenizer, recipe.block_size)
    tick = time.perf_counter()
    losses = train_causal_lm(
        model, blocks, recipe.finetune_steps, recipe.batch_size, recipe.finetune_lr, recipe.seed + 1, name,
        warmup_frac=recipe.warmup_frac, progress=progress,
    )
    seconds = time.perf_counter() - tick
    return save_model(model, tokenizer, out_dir / name), len(blocks), loss_summary(losses, seconds)


def build_experts(
    base_texts: list[str],
    expert_texts: list[str],
    out_dir: str | Path,
    recipe: ExpertRecipe,
    expert_name: str = "fr",
    *,
    progress: bool = True,
) -> dict[str, Path]:
    """Train the shared tokenizer, the base on `base_texts`, then fine-tune a copy on `expert_texts`.

    Writes `out_dir/base`, `out_dir/<expert_name>` and `out_dir/recipe.json`; returns the two folders.
    """
    if not base_texts or not expert_texts:
        raise ValueError("build_experts needs non-empty base_texts and expert_texts")
    check_expert_name(expert_name)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    tokenizer = train_tokenizer(base_texts + expert_texts, vocab_size=recipe.vocab_size)
    base_blocks = tokenize_blocks(base_texts, tokenizer, recipe.block_size)

    model = make_model(recipe, tokenizer)
    tick = time.perf_counter()
    base_losses = train_causal_lm(
        model, base_blocks, recipe.base_steps, recipe.batch_size, recipe.lr, recipe.seed, "base",
        warmup_frac=recipe.warmup_frac, progress=progress,
    )
    base_seconds = time.perf_counter() - tick
    paths = {"base": save_model(model, tokenizer, out_dir / "base")}
    paths[expert_name], expert_blocks, expert_summary = finetune_and_save(
        copy.deepcopy(model), tokenizer, expert_texts, out_dir, recipe, expert_name, progress=progress
    )

    report = {
        "recipe": asdict(recipe),
        "expert_name": expert_name,
        "n_params": sum(p.numel() for p in model.parameters()),
        "tokenizer_vocab": len(tokenizer),
        "blocks": {"base": len(base_blocks), expert_name: expert_blocks},
        "train": {"base": loss_summary(base_losses, base_seconds), expert_name: expert_summary},
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    (out_dir / "recipe.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths


def read_report(out_dir: Path, recipe: ExpertRecipe) -> dict:
    """The folder's `recipe.json` (or a fresh one), refusing a recipe other than the one it records.

    Loss summaries of experts trained with different schedules side by side would be misleading.
    """
    path = out_dir / "recipe.json"
    if not path.is_file():
        return {"recipe": asdict(recipe)}
    report = json.loads(path.read_text(encoding="utf-8"))
    recorded = report.setdefault("recipe", asdict(recipe))
    if recorded != asdict(recipe):
        raise ValueError(f"{path} records a different recipe: {recorded} (given {asdict(recipe)})")
    return report


def finetune_expert(
    base_dir: str | Path,
    texts: list[str],
    out_dir: str | Path,
    recipe: ExpertRecipe,
    name: str,
    *,
    progress: bool = True,
) -> Path:
    """Fine-tune the saved base in `base_dir` on `texts` into another expert, `out_dir/<name>`.

    Adds an expert (say German) next to those `build_experts` made, with the same fine-tune recipe and
    the base's own tokenizer, without retraining the base. Its loss summary and block count go into
    `out_dir/recipe.json` under `train[name]` and `blocks[name]`; other entries are kept.
    """
    check_expert_name(name)
    if not texts:
        raise ValueError("finetune_expert needs non-empty texts")
    out_dir = Path(out_dir)
    report = read_report(out_dir, recipe)  # before training: a mismatch should cost nothing
    model = load_causal_lm(str(base_dir))
    if recipe.block_size > model.config.n_positions:
        raise ValueError(f"block_size {recipe.block_size} exceeds the base's {model.config.n_positions} positions")
    tokenizer = load_tokenizer(str(base_dir))
    path, n_blocks, summary = finetune_and_save(model, tokenizer, texts, out_dir, recipe, name, progress=progress)
    report.setdefault("blocks", {})[name] = n_blocks
    report.setdefault("train", {})[name] = summary
    (out_dir / "recipe.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
