"""Bundled English/French corpus for the offline demo, generated from our own grammar.

The demo trains a small English base model and fine-tunes it on French, so each language needs
enough variety for a small model to learn its statistics: word order, agreement, function words,
punctuation. One planner decides who does what, where and when (shared vocabulary concepts and
themes), and two grammars realise it: English (agreement, do-support, a/an, adjective order) and
French (gender, elision, contractions, adjective agreement and placement, présent, imparfait,
passé composé with avoir/être, ne ... pas, « » dialogue). Every sentence comes from our own
vocabulary and grammar tables in `assets/bundled_corpus.yaml` (which documents their format) and the
rules in this package; no text is copied from any book, website or dataset.

Modules, one job each: `tables` (the data file parsed into word lists and Noun/Adj/Verb entries),
`syntax` (language-independent noun phrases and clauses), `planner` (theme, people, places, times;
who does what), `english` and `french` (realising clauses), `writer` (sentences, dialogue, documents).
This module is the public API.
"""
from __future__ import annotations

import random
from pathlib import Path

from superpose.demo.bundled_corpus.tables import ADJECTIVES, NOUNS, VERBS
from superpose.demo.bundled_corpus.writer import Writer

__all__ = ["ADJECTIVES", "DEFAULT_SIZES", "LANGUAGES", "NOUNS", "SPLITS", "VERBS", "generate_documents", "write_corpus"]

LANGUAGES = ("en", "fr")
SPLITS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 2500, "valid": 250, "test": 250}


def _check(language: str, split: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}: expected one of {LANGUAGES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")


def generate_documents(language: str, split: str, n_documents: int | None = None) -> list[str]:
    """Documents (one paragraph of 3-7 sentences each) for a language and split.

    The seed is a string of language and split, so the output is the same on every run and every
    machine (no `hash()`), and each split draws different documents.
    """
    _check(language, split)
    n = DEFAULT_SIZES[split] if n_documents is None else n_documents
    if n < 0:
        raise ValueError(f"n_documents must be non-negative, got {n}")
    rng = random.Random(f"superpose-bundled-corpus/{language}/{split}")
    return [Writer(language, rng).document() for _ in range(n)]


def write_corpus(out_dir: str | Path) -> dict[tuple[str, str], Path]:
    """Write `out_dir/{lang}/{split}.txt` (UTF-8, one document per line) for every language and split."""
    paths = {}
    for language in LANGUAGES:
        for split in SPLITS:
            path = Path(out_dir) / language / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(generate_documents(language, split)) + "\n", encoding="utf-8")
            paths[language, split] = path
    return paths
