"""Training blocks: every file's text cut into blocks, each labelled with its stack (or none), plus synthetic
code-switched blocks whose tokens carry their own labels."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import torch

from superpose.data.code_switch import switched_blocks
from superpose.data.text import DataError, collate, load_texts, tokenize_blocks
from superpose.model.superposed import SuperposedModel

UNLABELLED = "unlabelled"  # the name `--train FILE` (no NAME=) gets; more such files: unlabelled:2, ...
MIXED = -1  # domain of unlabelled blocks and of code-switched blocks (their tokens carry the labels)
SWITCH_STREAM = 1  # seed_of(seed, SWITCH_STREAM) picks the blocks replaced by code-switched ones


def seed_of(*parts: int) -> int:
    """A 63-bit seed from a few integers (hashed, so nearby tuples give unrelated streams)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


@dataclass
class LabelledBlocks:
    blocks: list[torch.Tensor]
    domains: list[int]  # stack index, or MIXED
    names: list[str]  # domain index -> name
    token_domains: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> per-token domains (switched)

    def __len__(self) -> int:
        return len(self.blocks)

    def labelled_tokens(self, index: int) -> int:
        """Tokens of block `index` with a domain label (reconstruction targets and gate labels)."""
        if index in self.token_domains:
            return int((self.token_domains[index] >= 0).sum())
        return self.blocks[index].numel() if self.domains[index] >= 0 else 0

    def collate(self, rows: list[int], pad_id: int):
        return collate([self.blocks[i] for i in rows], [self.domains[i] for i in rows], pad_id,
                       [self.token_domains.get(i) for i in rows])


def domain_names(model: SuperposedModel) -> list[str]:
    """Domain m is stack m's: base, then each expert by the name --expert NAME=PATH gave it."""
    return model.stack_names


def is_unlabelled(name: str) -> bool:
    return name == UNLABELLED or name.startswith(UNLABELLED + ":")


def load_labelled(
    files: dict[str, str], names: list[str], tokenizer, block_size: int, max_blocks: int | None,
    switch_rate: float = 0.0, seed: int = 0,
) -> LabelledBlocks:
    """Blocks of every file; with `switch_rate`, that share of the blocks (chosen with `seed`) is replaced by
    blocks whose sentences alternate between the files' texts, each token labelled with its file's domain
    (none for an unlabelled file: label-free runs learn to switch from the LM loss alone)."""
    unknown = sorted(name for name in files if name not in names and not is_unlabelled(name))
    if unknown:
        raise DataError(f"data named {unknown} matches no model: use one of {names} (base, or an expert's name), "
                        "or pass the file without NAME= as unlabelled text")
    data = LabelledBlocks([], [], names)
    texts: dict[str, list[str]] = {}
    for name, path in files.items():
        lines = load_texts(path)
        blocks = tokenize_blocks(lines, tokenizer, block_size, max_blocks)
        data.blocks.extend(blocks)
        data.domains.extend([MIXED if is_unlabelled(name) else names.index(name)] * len(blocks))
        texts[name] = lines
    count = round(switch_rate * len(data))
    if count and len(texts) < 2:
        warnings.warn(f"switch_rate {switch_rate} mixes sentences of several training files, and there is one: no "
                      "code-switched blocks", UserWarning, stacklevel=2)
    elif count:
        blocks, sources, source_names = switched_blocks(texts, tokenizer, block_size, count, seed)
        if len(blocks) < count:
            warnings.warn(f"the training files held enough sentences for {len(blocks)} code-switched blocks, not "
                          f"{count}: the share of such blocks is {len(blocks) / len(data):.3f}", UserWarning,
                          stacklevel=2)
        to_stack = torch.tensor([MIXED if is_unlabelled(n) else names.index(n) for n in source_names])
        # a stream of its own: seeded with `seed` alone it was the first epoch's visit order (seed 0), so every
        # code-switched block came first and a short run saw nothing else
        pick = torch.Generator().manual_seed(seed_of(seed, SWITCH_STREAM))
        replaced = torch.randperm(len(data), generator=pick)[: len(blocks)].tolist()
        for index, block, source in zip(replaced, blocks, sources):
            data.blocks[index], data.domains[index] = block, MIXED
            data.token_domains[index] = torch.where(source >= 0, to_stack[source.clamp(min=0)], source)
    return data


