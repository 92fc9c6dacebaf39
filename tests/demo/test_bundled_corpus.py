"""Tests for the bundled English/French corpus generator (superpose.demo.bundled_corpus)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from superpose.demo.bundled_corpus import DEFAULT_SIZES, LANGUAGES, SPLITS, generate_documents, write_corpus

WORD = re.compile(r"[^\W\d_]+")  # letters only: "l'eau" -> "l", "eau"; "o'clock" -> "o", "clock"


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@pytest.fixture(scope="module")
def train() -> dict[str, list[str]]:
    """The default train split of each language, generated once for the module (well under a second each)."""
    return {lang: generate_documents(lang, "train") for lang in LANGUAGES}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict[tuple[str, str], Path]]:
    """`write_corpus` output, written once for the module (a few seconds): its directory and paths."""
    out = tmp_path_factory.mktemp("bundled") / "corpus"
    return out, write_corpus(out)


# sha256 of every file `write_corpus` writes, measured on the generator before its tables moved to
# assets/bundled_corpus.yaml. Any change to a table entry, a rule or the random stream changes them;
# update them only when changing the corpus on purpose (the demo's results depend on it).
CORPUS_SHA256 = {
    ("en", "train"): "6cf27e29d9f79ef185c58a0c9f20cd124709bf5cc698843fa94f970ef7dee3a8",
    ("en", "valid"): "274f4326034a010a32c6ca70c037cc36ec924342ccbcd3f8f03eb843b5ad65b4",
    ("en", "test"): "ad09179dc8be0753922889415fe00b37a8cb2890200d5fd504363abaa8de2ee9",
    ("fr", "train"): "aacee10bbee93005ed9b28685eaa8c205d1598c1690bae07cce10e83b38503aa",
    ("fr", "valid"): "bf3646cbbbea0df402d0ab81257c26de51cc64f2a77c0a89ddc64a70f8f2f8ad",
    ("fr", "test"): "adfc9bc6854d940ec3106b1be824ee7991d4d2fef5ceb081e5c1581795e16d4a",
}


def test_corpus_bytes_match_recorded_checksums(written, train):
    _, paths = written
    assert set(CORPUS_SHA256) == {(lang, split) for lang in LANGUAGES for split in SPLITS}
    digests = {key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in paths.items()}
    assert digests == CORPUS_SHA256
    for lang in LANGUAGES:  # the files are exactly the generated documents, one per line
        assert paths[lang, "train"].read_bytes() == ("\n".join(train[lang]) + "\n").encode("utf-8")


def test_generation_is_deterministic():
    for lang in LANGUAGES:
        first = generate_documents(lang, "valid")
        assert first == generate_documents(lang, "valid")
        assert len(first) == DEFAULT_SIZES["valid"]
        # a shorter request is the start of the same stream
        assert generate_documents(lang, "valid", 20) == first[:20]


def test_splits_hold_different_documents(train):
    for lang in LANGUAGES:
        seen = set(train[lang])
        for split in ("valid", "test"):
            docs = generate_documents(lang, split)
            assert not seen & set(docs), f"{lang}/{split} repeats train documents"
        assert generate_documents(lang, "valid", 50) != generate_documents(lang, "test", 50)


def test_documents_are_single_paragraphs(train):
    for lang in LANGUAGES:
        for doc in train[lang][:500]:
            assert "\n" not in doc and doc == doc.strip()
            assert doc[0].isupper() and doc[-1] in ".!?»\""
            ends = len(re.findall(r"[.!?](?: ?»|\")?(?=\s+[A-ZÀ-Ý«\"]|$)", doc))
            assert 3 <= ends <= 14, doc  # 3-7 sentences, where a question and its reply count as one


def test_write_corpus_writes_six_utf8_files(written, train):
    out, paths = written
    assert set(paths) == {(lang, split) for lang in LANGUAGES for split in SPLITS}
    for (lang, split), path in paths.items():
        assert path == out / lang / f"{split}.txt"
        lines = path.read_bytes().decode("utf-8").splitlines()
        assert len(lines) == DEFAULT_SIZES[split]
        assert all(line.strip() for line in lines)
        if split == "train":
            assert lines == train[lang]


def test_french_has_accents_elisions_and_contractions(train):
    text = "\n".join(train["fr"])
    for ch in "éèêàçù":
        assert ch in text, ch
    docs_with_elision = sum(bool(re.search(r"\b(l|d|qu|j|n|s|c)'\w", d)) for d in train["fr"])
    assert docs_with_elision / len(train["fr"]) > 0.5  # measured: ~0.7
    words = _words(text)
    for form in ("l", "d", "qu", "j", "n", "au", "aux", "du", "des", "ne", "pas", "« ", " »"):
        assert form in words or form in text, form
    # elision and contraction are never skipped
    assert not re.search(r"\b(le|la|de|je|ne|que|me|te|se) [aeiouéèêàâîôû]", text, re.IGNORECASE)
    assert not re.search(r"\b(à|de) (le|les)\b", text)


def test_english_does_not_look_french(train):
    text = "\n".join(train["en"])
    words = _words(text)
    french = sum(w in {"le", "la", "les", "une", "des"} for w in words)
    assert french / len(words) < 0.01
    assert not re.search(r"[éèêàçùâîôû«»]", text)
    assert not re.search(r"\ba [aeio]", text)
    assert not re.search(r"\ban (?!hour|honest)[b-df-hj-np-tv-z]", text)


def test_subject_verb_agreement_spot_checks(train):
    en, fr = "\n".join(train["en"]), "\n".join(train["fr"])
    assert not re.search(r"\b(he|she|it) (were|are|have|do)\b", en, re.IGNORECASE)
    assert not re.search(r"\b(they|we|you) (was|is|has|does)\b", en, re.IGNORECASE)
    assert not re.search(r"\b(ils|elles) (est|a|était|avait)\b", fr)
    assert not re.search(r"\b(il|elle) (sont|ont|étaient|avaient)\b", fr)


def test_lexical_and_bigram_variety(train):
    # Measured on the default train split: ~1860 (en) and ~2400 (fr) word types, bigram type/token
    # ratio ~0.31 (en) and ~0.28 (fr), ~96 % distinct sentences. A generator that collapsed onto a
    # few templates or a small vocabulary would repeat its bigrams and fall far below these floors,
    # while ordinary tuning of the tables leaves room above them.
    for lang in LANGUAGES:
        per_doc = [_words(d) for d in train[lang]]
        words = [w for doc in per_doc for w in doc]
        bigrams = [b for doc in per_doc for b in zip(doc, doc[1:])]
        assert len(set(words)) >= 1500, lang
        assert len(set(bigrams)) / len(bigrams) > 0.2, lang
        sentences = [s for d in train[lang] for s in re.split(r"(?<=[.!?])\s+", d)]
        assert len(set(sentences)) / len(sentences) > 0.9, lang


@pytest.mark.parametrize("language, split", [("de", "train"), ("EN", "train"), ("en", "dev"), ("fr", "")])
def test_unknown_language_or_split_raises(language, split):
    with pytest.raises(ValueError, match="unknown"):
        generate_documents(language, split)


def test_negative_size_raises():
    with pytest.raises(ValueError):
        generate_documents("en", "train", -1)
