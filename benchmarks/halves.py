"""Held-out data of the real-text benchmarks: each domain's valid file cut into a selection and a report half,
plus a code-switched set built from each half (never from training files).

A domain is a corpus folder: the novels' `en`, `fr`, `de` (`train.txt`/`valid.txt`, one paragraph per line) or
`code` (`train.jsonl`/`valid.jsonl`, one source file per record). The package READMEs of `docs/valid.jsonl`
(prose with code examples) are evaluation-only: `docs_halves` cuts them the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

from superpose.data.code_switch import write_mixed
from superpose.data.text import load_texts

MIXED_LINES = 400  # code-switched lines per half (each 2-6 segments)


def _split_file(corpus: Path, folder: str, name: str) -> Path:
    """`folder/name.txt` or, for record corpora (code, docs), `folder/name.jsonl`."""
    text = corpus / folder / f"{name}.txt"
    return text if text.is_file() else corpus / folder / f"{name}.jsonl"


def _write_half(records: list[str], path_stem: Path, jsonl: bool) -> str:
    if jsonl:  # a record (a source file) holds line breaks: keep one record per JSON line
        path = path_stem.with_suffix(".jsonl")
        path.write_text("".join(json.dumps({"text": r}, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        path = path_stem.with_suffix(".txt")
        path.write_text("\n".join(records) + "\n", encoding="utf-8")
    return str(path)


def halves_of(source: Path, out: Path, stem: str) -> dict[str, str]:
    """A valid file -> {"select": first half of its records, "report": the second half}, written under `out`.

    Novels' paragraphs are cut at half their count; source files, whose sizes differ a hundredfold, at half
    their characters."""
    records = load_texts(source)
    half = len(records) // 2
    if source.suffix == ".jsonl":
        sizes = [len(r) for r in records]
        half = next(i for i in range(1, len(records)) if sum(sizes[:i]) * 2 >= sum(sizes)) if len(records) > 1 else 0
    return {split: _write_half(chunk, out / f"{stem}_{split}", source.suffix == ".jsonl")
            for split, chunk in (("select", records[:half]), ("report", records[half:]))}


def split_halves(corpus: Path, out: Path, languages: dict[str, str] | None = None,
                 mixed_stem: str = "mixed") -> dict[str, dict[str, str]]:
    """valid -> select (first half of the records) and report (second half) per domain name -> corpus folder,
    and `<mixed_stem>_<split>.jsonl` built with `superpose mix-data --segment auto` from each half (sentences of
    prose, blank-line chunks of code); also each domain's train file."""
    languages = languages or {"base": "en", "fr": "fr"}
    files: dict[str, dict[str, str]] = {"train": {}, "select": {}, "report": {}}
    out.mkdir(parents=True, exist_ok=True)
    for domain, folder in languages.items():
        for split, path in halves_of(_split_file(corpus, folder, "valid"), out, folder).items():
            files[split][domain] = path
        files["train"][domain] = str(_split_file(corpus, folder, "train"))
    for split in ("select", "report"):
        path = out / f"{mixed_stem}_{split}.jsonl"
        # the same code path as `superpose mix-data --data base=en_{split}.txt --data fr=fr_{split}.txt [...]
        #   --out {mixed_stem}_{split}.jsonl --seed 0 --max-lines 400 --segment auto`
        write_mixed(dict(files[split]), path, seed=0, segment="auto", max_lines=MIXED_LINES)
        files[split]["switch"] = str(path)
    return files


def docs_halves(corpus: Path, out: Path, files: dict[str, dict[str, str]]) -> None:
    """Add the READMEs' halves to `files` as the unlabelled set `docs` (evaluation only, never trained on)."""
    for split, path in halves_of(corpus / "docs" / "valid.jsonl", out, "docs").items():
        files[split]["docs"] = path
