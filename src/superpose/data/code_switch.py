"""Code-switched text: lines whose sentences alternate between sources, with the span of each segment.

`mix_lines` builds them from monolingual files (e.g. English and French held-out text), and
`tokenize_spans` turns them into token blocks with the source of every token, so an evaluation can
score each language inside mixed lines and the tokens right after each switch.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from superpose.data.text import DataError, load_texts, read_jsonl

SEGMENTS = ("sentence", "line", "auto")
CHUNK_LINES = 12  # a multi-line document (code, markdown) is cut at blank lines into chunks of at most this many
# A sentence ends at . ! ? or … (then any closing quotes or brackets, a French » after a space) and whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?…])(?:[ \u00a0\u202f]?»)?[\"'”’)\]]*\s+")
NO_SOURCE = -1  # tokens outside every span (the end-of-text separator)


def split_sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() + len(match.group(0).rstrip())
        pieces.append(text[start:end])
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def split_units(text: str) -> list[str]:
    """`auto` segments: a one-line paragraph (prose) into sentences; a document with line breaks (code,
    markdown) into its blank-line-separated chunks of at most `CHUNK_LINES` lines, its own line breaks kept."""
    if "\n" not in text.strip():
        return split_sentences(text)
    chunks = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line.rstrip() for line in block.strip("\n").split("\n")]
        lines = [line for line in lines if line.strip()]
        chunks.extend("\n".join(lines[i : i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES))
    return chunks


def _units(lines: list[str], segment: str) -> list[str]:
    if segment == "line":
        return list(lines)
    split = split_sentences if segment == "sentence" else split_units
    return [unit for line in lines for unit in split(line)]


def mix_lines(sources: dict[str, list[str]], seed: int = 0, segment: str = "sentence",
              max_lines: int | None = None, segments_per_line: tuple[int, int] = (2, 6),
              snippets: bool = False) -> list[dict]:
    """Lines of `segments_per_line` segments, each from another source than the one before.

    Each source's units (sentences, whole lines, or with `auto` sentences of prose and chunks of code) are
    shuffled with `seed` and used once; mixing stops when a source runs out or at `max_lines`. With `snippets`, a
    multi-line unit is cut to a random run of 1 to all of its lines, as documentation quotes a line or two of code
    inside its prose as often as a whole block. Each record is
    {"text", "spans": [{start, end, source}]}, and the spans tile the text exactly (the space, or the line
    break next to a multi-line segment, before a segment belongs to it).
    """
    if segment not in SEGMENTS:
        raise DataError(f"--segment must be one of {', '.join(SEGMENTS)}; got {segment!r}")
    if len(sources) < 2:
        raise DataError("code-switched lines need at least two sources (--data NAME=FILE, twice or more)")
    rng = random.Random(seed)
    pools = {}
    for name, lines in sources.items():
        units = _units(lines, segment)
        rng.shuffle(units)
        pools[name] = units
    names = list(sources)
    records: list[dict] = []
    while max_lines is None or len(records) < max_lines:
        count = rng.randint(*segments_per_line)
        order = [rng.choice(names)]
        while len(order) < count:
            order.append(rng.choice([n for n in names if n != order[-1]]))
        if any(sum(1 for o in order if o == n) > len(pools[n]) for n in names):
            break
        text, spans, previous = "", [], ""
        for name in order:
            piece = pools[name].pop()
            if snippets and "\n" in piece:
                piece = _snippet(piece, rng)
            start = len(text)
            joint = "\n" if "\n" in piece or "\n" in previous else " "  # code chunks stay on their own lines
            text += (joint if text else "") + piece
            previous = piece
            spans.append({"start": start, "end": len(text), "source": name})
        records.append({"text": text, "spans": spans})
    if not records:
        raise DataError("the sources hold too little text to build one mixed line")
    return records


def _snippet(chunk: str, rng: random.Random) -> str:
    lines = chunk.split("\n")
    count = rng.randint(1, len(lines))
    start = rng.randint(0, len(lines) - count)
    return "\n".join(lines[start : start + count])


def write_mixed(sources: dict[str, str], out: str | Path, seed: int = 0, segment: str = "sentence",
                max_lines: int | None = None) -> tuple[Path, int]:
    """Read each NAME=FILE source, mix, and write JSONL; returns (path, lines written)."""
    records = mix_lines({name: load_texts(path) for name, path in sources.items()}, seed, segment, max_lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out)
    return out, len(records)


def load_spans(path: str | Path) -> list[dict] | None:
    """The records of a code-switched JSONL file (every line carries `spans`), checked; None for other files."""
    path = Path(path)
    if path.suffix != ".jsonl":
        return None
    records = read_jsonl(path)
    with_spans = [number for number, record in records if "spans" in record]
    if not with_spans:
        return None
    if len(with_spans) != len(records):
        without = next(number for number, record in records if "spans" not in record)
        raise DataError(f"{path}:{without}: this line has no 'spans' while line {with_spans[0]} has: a "
                        f"code-switched file needs spans on every line")
    for number, record in records:
        spans, text = record["spans"], record["text"]
        if not isinstance(spans, list) or not spans or not all(isinstance(span, dict) for span in spans):
            raise DataError(f"{path}:{number}: 'spans' must be a non-empty list of {{start, end, source}} objects")
        position = 0
        for span in spans:
            if span.get("start") != position or not isinstance(span.get("end"), int) \
                    or span["end"] <= position or not isinstance(span.get("source"), str):
                raise DataError(f"{path}:{number}: spans must tile the text in order, each with a 'source'")
            position = span["end"]
        if position != len(text):
            raise DataError(f"{path}:{number}: spans end at {position}, the text at {len(text)}")
    return [record for _, record in records]


@dataclass
class SourcedBlocks:
    blocks: list[torch.Tensor]  # token ids, each (T,)
    sources: list[torch.Tensor]  # source index of each token, each (T,); NO_SOURCE outside spans
    segment_start: list[torch.Tensor]  # tokens since its segment began, each (T,); first segments count from 0 too
    switched: list[torch.Tensor]  # each (T,) bool: the token's segment is not the line's first
    names: list[str]  # source index -> name


def tokenize_spans(records: list[dict], tokenizer, block_size: int, max_blocks: int | None = None) -> SourcedBlocks:
    """Like `data.tokenize_blocks` (lines joined by EOS, cut into blocks), keeping each token's source."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("code-switched evaluation needs a fast tokenizer (character offsets of each token)")
    names = sorted({span["source"] for record in records for span in record["spans"]})
    ids, sources, since, switched = [], [], [], []
    limit = None if max_blocks is None else max_blocks * block_size
    for record in records:
        encoded = tokenizer(record["text"], add_special_tokens=False, return_offsets_mapping=True)
        spans, text = record["spans"], record["text"]
        last_segment, count = None, 0
        for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            # a token belongs to the span holding its first non-space character
            first = start + (len(text[start:end]) - len(text[start:end].lstrip())) if end > start else start
            segment = next((i for i, s in enumerate(spans) if s["start"] <= first < s["end"]), len(spans) - 1)
            count = count + 1 if segment == last_segment else 0
            last_segment = segment
            ids.append(token)
            sources.append(names.index(spans[segment]["source"]))
            since.append(count)
            switched.append(segment > 0)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
            sources.append(NO_SOURCE)
            since.append(0)
            switched.append(False)
        if limit is not None and len(ids) >= limit:
            break
    starts = range(0, len(ids), block_size)
    keep = [i for i in starts if len(ids[i : i + block_size]) >= 2][:max_blocks]
    if not keep:
        raise DataError("the code-switched text tokenises to fewer than two tokens")

    def cut(values: list, dtype: torch.dtype) -> list[torch.Tensor]:
        return [torch.tensor(values[i : i + block_size], dtype=dtype) for i in keep]

    return SourcedBlocks(cut(ids, torch.long), cut(sources, torch.long), cut(since, torch.long),
                         cut(switched, torch.bool), names)


def switched_blocks(texts: dict[str, list[str]], tokenizer, block_size: int, count: int,
                    seed: int = 0, snippets: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    ("""`count` training blocks whose sentences (or code chunks) alternate between the sources: """
     """(token ids, each token's source
    index into the returned names, NO_SOURCE on the end-of-text tokens between lines).""")
    records = mix_lines(texts, seed=seed, segment="auto", max_lines=max(8, 4 * count), snippets=snippets)
    sourced = tokenize_spans(records, tokenizer, block_size, max_blocks=count)
    return sourced.blocks, sourced.sources, sourced.names
