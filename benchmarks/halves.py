"""Held-out data of the real-text benchmarks: each language's valid.txt cut into a selection and a report half,
plus a code-switched set built from each half (never from training files)."""
from __future__ import annotations

from pathlib import Path

from superpose.data.code_switch import write_mixed
from superpose.data.text import load_texts

MIXED_LINES = 400  # code-switched lines per half (each 2-6 sentences)


def split_halves(corpus: Path, out: Path, languages: dict[str, str] | None = None,
                 mixed_stem: str = "mixed") -> dict[str, dict[str, str]]:
    """valid.txt -> select (first half of the lines) and report (second half) per domain name -> language folder,
    and `<mixed_stem>_<split>.jsonl` built with `superpose mix-data` from each half; also each train.txt."""
    languages = languages or {"base": "en", "fr": "fr"}
    files: dict[str, dict[str, str]] = {"train": {}, "select": {}, "report": {}}
    out.mkdir(parents=True, exist_ok=True)
    for domain, lang in languages.items():
        lines = load_texts(corpus / lang / "valid.txt")
        half = len(lines) // 2
        for split, chunk in (("select", lines[:half]), ("report", lines[half:])):
            path = out / f"{lang}_{split}.txt"
            path.write_text("\n".join(chunk) + "\n", encoding="utf-8")
            files[split][domain] = str(path)
        files["train"][domain] = str(corpus / lang / "train.txt")
    for split in ("select", "report"):
        path = out / f"{mixed_stem}_{split}.jsonl"
        # the same code path as `superpose mix-data --data base=en_{split}.txt --data fr=fr_{split}.txt [...]
        #   --out {mixed_stem}_{split}.jsonl --seed 0 --max-lines 400`
        write_mixed(dict(files[split]), path, seed=0, segment="sentence", max_lines=MIXED_LINES)
        files[split]["switch"] = str(path)
    return files
