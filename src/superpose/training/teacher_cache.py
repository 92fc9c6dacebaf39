"""The teacher's top-k next-token log-probabilities, computed once and reused (safetensors shards).

The teacher runs every stack, so for several epochs over the same blocks it pays to run it once. For each
block and position we keep the k most likely tokens' tempered log-probabilities and the log of the mass of
all the others (`rest`, computed from the full distribution, so it is exact). The distillation loss then
compares teacher and student on k + 1 outcomes: the k kept tokens and "any other token". That KL is a
lower bound of the full KL (merging outcomes never increases a KL) and equals it when the student's
distribution over the other tokens is proportional to the teacher's; `truncation_cost` measures the gap.

Layout of `DIR/.superpose/teacher-topk/` (`distill`'s work folder): `meta.json` (k, temperature, the
fingerprint of the run, its weights and the data) and `shard-NNNNN.safetensors` files, each holding
`blocks` (S,) block indices, `lengths` (S,),
`indices` (S, T, k) int32, `log_probs` (S, T, k) float32 and `rest` (S, T) float32. Each shard is written
under a temporary name and renamed, so an interrupted build keeps its finished shards and resumes.

Entries are found by block index, not by shard number: a rerun computes only the blocks no finished shard
holds, into new shards. So a run resumed with more steps, or rerun with another seed or batch after a kill
during the build, reuses every finished shard and fills what is missing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from superpose.core.settings import SettingsError
from superpose.evaluation.scoring import scoring_batches

CACHE_DIR = "teacher-topk"
SHARD_BLOCKS = 256


def tempered_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, T, V) log softmax(logits / T) in float32; a mixture head's log-probabilities are logits too."""
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def top_k_entries(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices (B, T, k), kept log-probs (B, T, k), log of the other tokens' mass (B, T)), from full log-probs."""
    kept, indices = log_probs.topk(k, dim=-1)
    rest = log_probs.scatter(-1, indices, float("-inf")).logsumexp(-1)  # exact: no 1 - Σ cancellation
    return indices, kept, rest


@torch.no_grad()
def teacher_logits(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The teacher as it is served: never under the student's autocast, in whatever dtype its stacks hold."""
    with torch.autocast(input_ids.device.type, enabled=False):
        return teacher(input_ids, attention_mask=attention_mask).logits


def teacher_log_probs(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    return tempered_log_probs(teacher_logits(teacher, input_ids, attention_mask), temperature)


class TopKCache:
    """Read side: the cached entries of any set of blocks, padded like a collated batch."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.k = int(self.meta["k"])
        self._where: dict[int, tuple[int, int]] = {}
        self._shards: list[dict[str, torch.Tensor]] = []
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            shard = load_file(str(path))
            for row, block in enumerate(shard["blocks"].tolist()):
                self._where[block] = (len(self._shards), row)
            self._shards.append(shard)

    def __contains__(self, block: int) -> bool:
        return block in self._where

    def __len__(self) -> int:
        return len(self._where)

    def lookup(self, blocks: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (B, length, k) long, log-probs (B, length, k), rest (B, length)) for `blocks`, cut to `length`."""
        missing = [b for b in blocks if b not in self._where]
        if missing:
            raise SettingsError(f"the teacher cache in {self.folder} lacks blocks {missing[:5]}: rebuild it (delete "
                                "the folder) or distill without --top-k")
        rows = [self._shards[s] for s, _ in (self._where[b] for b in blocks)]
        at = [r for _, r in (self._where[b] for b in blocks)]
        indices = torch.stack([shard["indices"][r, :length] for shard, r in zip(rows, at)]).long()
        log_probs = torch.stack([shard["log_probs"][r, :length] for shard, r in zip(rows, at)])
        rest = torch.stack([shard["rest"][r, :length] for shard, r in zip(rows, at)])
        return indices, log_probs, rest


def cache_folder(out_dir: str | Path) -> Path:
    return Path(out_dir) / CACHE_DIR


def build_topk_cache(teacher, blocks: list[torch.Tensor], needed: list[int], out_dir: str | Path, k: int,
                     temperature: float, fingerprint: dict, batch_size: int, pad_id: int, device: torch.device,
                     progress: bool = True) -> TopKCache:
    """Compute the teacher's top-k entries of the blocks `needed` (in that order) into shards; keep finished ones.

    `fingerprint` names what the entries depend on (the run, the data, the tokenizer, k, the temperature);
    a cache built for another fingerprint is refused rather than silently reused.
    """
    vocab = teacher.config.vocab_size
    if not 1 <= k < vocab:  # before anything is written: a bad value must not leave a cache behind
        raise SettingsError(f"--top-k must be in [1, {vocab - 1}] (the vocabulary has {vocab} tokens); got {k}")
    folder = cache_folder(out_dir)
    meta = {"k": k, "temperature": temperature, "fingerprint": fingerprint, "shard_blocks": SHARD_BLOCKS}
    if (folder / "meta.json").is_file():
        saved = json.loads((folder / "meta.json").read_text())
        if saved != json.loads(json.dumps(meta)):
            raise SettingsError(f"{folder} holds a teacher cache for other settings (k, temperature, run or data "
                                "differ): delete it or use another --out")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    length = max(b.numel() for b in blocks)
    have, numbers = set(), [-1]
    for path in sorted(folder.glob("shard-*.safetensors")):
        have.update(load_file(str(path))["blocks"].tolist())
        numbers.append(int(path.stem.split("-")[1]))
    missing = [b for b in needed if b not in have]
    shards = [missing[i : i + SHARD_BLOCKS] for i in range(0, len(missing), SHARD_BLOCKS)]
    teacher.eval()
    for number, shard_blocks in enumerate(tqdm(shards, desc="teacher top-k", disable=not progress, leave=False),
                                          start=max(numbers) + 1):
        final = folder / f"shard-{number:05d}.safetensors"
        indices = torch.zeros(len(shard_blocks), length, k, dtype=torch.int32)
        kept = torch.full((len(shard_blocks), length, k), float("-inf"))
        rest = torch.full((len(shard_blocks), length), float("-inf"))
        start = 0  # the batch's first row in the shard
        for rows, batch in scoring_batches(blocks, batch_size, pad_id, device, shard_blocks):
            # (B, T, V)
            log_probs = teacher_log_probs(teacher, batch.input_ids, batch.attention_mask, temperature).cpu()
            top_i, top_lp, top_rest = top_k_entries(log_probs, k)
            width = log_probs.shape[1]
            indices[start : start + len(rows), :width] = top_i.int()
            kept[start : start + len(rows), :width] = top_lp
            rest[start : start + len(rows), :width] = top_rest
            start += len(rows)
        tmp = folder / f".{final.name}.tmp"
        save_file({"blocks": torch.tensor(shard_blocks, dtype=torch.int64),
                   "lengths": torch.tensor([blocks[i].numel() for i in shard_blocks], dtype=torch.int32),
                   "indices": indices, "log_probs": kept, "rest": rest}, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.rename(final)
    return TopKCache(folder)


def kept_mass(cache: TopKCache) -> dict[str, float]:
    """Share of the teacher's (tempered) probability the k kept tokens hold: mean and lowest, over real positions."""
    masses = []
    for shard in cache._shards:
        for row, length in enumerate(shard["lengths"].tolist()):
            masses.append(shard["log_probs"][row, :length].exp().sum(-1))
    mass = torch.cat(masses)
    return {"mean": float(mass.mean()), "min": float(mass.min()), "positions": int(mass.numel())}
