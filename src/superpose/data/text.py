"""Domain-labelled text: read `.txt` / `.jsonl` files, tokenise, cut into blocks, batch."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """A data file is missing, empty, unreadable or malformed."""


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not valid UTF-8 (byte {err.start}): re-encode it as UTF-8") from err


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file; each record an object with a string `text`."""
    path = Path(path)
    records = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}:{number}: each JSONL line needs a string field 'text'")
        records.append((number, record))
    return records


def load_texts(path: str | Path) -> list[str]:
    """Documents of a `.txt` file (one per non-empty line) or a `.jsonl` file (`text` field)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        texts = [record["text"] for _, record in read_jsonl(path)]
    else:
        texts = _read_text(path).splitlines()
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{path} holds no text (empty file or only blank lines)")
    return texts


def tokenize_blocks(texts: list[str], tokenizer, block_size: int, max_blocks: int | None = None) -> list[torch.Tensor]:
    """Concatenate documents (separated by EOS) and cut the stream into blocks of `block_size` tokens.

    The final partial block is kept when it has at least two tokens, so short files still yield data.
    """
    if block_size < 2:
        raise DataError(f"block_size must be at least 2, got {block_size}")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    limit = None if max_blocks is None else max_blocks * block_size
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if limit is not None and len(stream) >= limit:
            break
    blocks = [torch.tensor(stream[i : i + block_size]) for i in range(0, len(stream), block_size)]
    blocks = [b for b in blocks if b.numel() >= 2]
    if max_blocks is not None:
        blocks = blocks[:max_blocks]
    if not blocks:
        raise DataError("the text tokenises to fewer than two tokens")
    return blocks


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    labels: torch.Tensor  # (B, T), -100 on padding
    domains: torch.Tensor  # (B,) index of the domain (0 = base, -1 = unlabelled or mixed)
    token_domains: torch.Tensor | None = None  # (B, T) each token's domain (-1 = none, padding included)

    def to(self, device: str | torch.device) -> Batch:
        """The batch moved to `device`, in place (returned for chaining)."""
        for key in ("input_ids", "attention_mask", "labels", "domains", "token_domains"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, value.to(device))
        return self


def collate(blocks: list[torch.Tensor], domains: list[int], pad_id: int = 0,
            token_domains: list[torch.Tensor | None] | None = None) -> Batch:
    """Right-pad blocks to one length; padding is masked out of attention and of the labels.

    `token_domains` gives a block's per-token domains (code-switched blocks); other blocks' tokens take
    their block's domain."""
    length = max(b.numel() for b in blocks)
    input_ids = torch.full((len(blocks), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(blocks), length), dtype=torch.long)
    for row, block in enumerate(blocks):
        input_ids[row, : block.numel()] = block
        mask[row, : block.numel()] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    per_token = torch.full((len(blocks), length), -1, dtype=torch.long)
    for row, block in enumerate(blocks):
        given = token_domains[row] if token_domains is not None else None
        per_token[row, : block.numel()] = given if given is not None else domains[row]
    return Batch(input_ids, mask, labels, torch.tensor(domains, dtype=torch.long), per_token)


def parse_named_paths(values: list[str] | None, default_name: str | None = None, flag: str = "--data",
                      unnamed: str | None = None) -> dict[str, str]:
    """Parse repeated `NAME=PATH` values; a bare PATH takes `default_name` when one is given, or else, with
    `unnamed`, the names unnamed, unnamed:2, unnamed:3, ..."""
    named: dict[str, str] = {}
    bare = 0
    for value in values or []:
        if "=" in value:
            name, path = value.split("=", 1)
        elif default_name is not None:
            name, path = default_name, value
        elif unnamed is not None:
            bare += 1
            name, path = (unnamed if bare == 1 else f"{unnamed}:{bare}"), value
        else:
            raise DataError(f"{flag} expects NAME=PATH, got {value!r}")
        if not name or not path:
            raise DataError(f"{flag} expects NAME=PATH, got {value!r}")
        if name in named:
            raise DataError(f"{flag} names {name!r} twice")
        named[name] = path
    return named
