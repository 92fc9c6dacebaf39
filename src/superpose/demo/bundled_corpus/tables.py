"""The bundled corpus's vocabulary: `assets/bundled_corpus.yaml` parsed into word lists and typed entries.

This is the one module that knows the data file's keys and entry format (the YAML documents it);
the grammars and the planner only see the names defined here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@cache
def _tables() -> dict:
    """The data file, parsed once (with PyYAML's C loader where it is built; the result is the same)."""
    text = (resources.files("superpose") / "assets" / "bundled_corpus.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _fields(entry: str) -> list[str]:
    """One table entry, fields separated by "|": "baker|f boulangère|vk"."""
    return [f.strip() for f in entry.split("|")]


def _pairs(entries: list[str]) -> list[tuple[str, ...]]:
    return [tuple(_fields(e)) for e in entries]


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


_T = _tables()
_PRENOMINAL = set(_T["prenominal"].split())  # French adjectives that go before the noun
CLASHES = [set(group.split()) for group in _T["clashes"]]  # two from one group contradict or repeat
STATES = tuple(_T["states"].split())
FR_IRREGULAR: dict[str, str] = _T["fr_irregular"]  # présent (6 persons) | participe passé
FR_ETRE = set(_T["fr_etre"].split())
H_ASPIRE = tuple(_T["h_aspire"].split())
WEATHER_ROWS = [tuple(row) for row in _T["weather"]]  # English pres, now, past state, past event; French x3
MANNER_PAIRS, FREQ_PAIRS, CONNECTOR_PAIRS = (_pairs(_T[k]) for k in ("manner", "frequency", "connectors"))
ADVERBS_FOR = {kind: set(adverbs) for kind, adverbs in _T["adverbs_for"].items()}
ONCE, STILL, FAST, LOUD, COUNTED, KIN, NOT_JOBS = (
    set(_T[k].split()) for k in ("once", "still", "fast", "loud", "counted", "kin", "not_jobs"))
SURFACES, BOXES = tuple(_T["surfaces"].split()), tuple(_T["boxes"].split())
DAYS = list(zip(_T["days"].split(), _T["fr_days"].split()))
EN_NUM, FR_NUM = _T["en_numbers"].split(), _T["fr_numbers"].split()
FIRST_NAMES, SURNAMES, TITLES = _T["first_names"], _T["surnames"], _T["titles"]
TOWN_PARTS = {lang: tuple(parts) for lang, parts in _T["town_parts"].items()}  # first, second, suffix
INTRO_RELATIVES = _pairs(_T["intro_relatives"])  # English present, English past, French present, French past
SAY = {verb: tuple(_fields(forms)) for verb, forms in _T["say"].items()}  # English past, present, French verb
EN_CONTRACTIONS = [(re.compile(r"\b" + full + r"\b"), short) for full, short in _pairs(_T["en_contractions"])]
TIMES = _pairs(_T["times"])  # English, French, tense tags


# ---------------------------------------------------------------------------------------------
# Lexicon objects.
@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    gender: str
    fr: str
    fr_pl: str
    cat: str
    themes: str
    mass: bool = False
    en_prep: str = ""
    fr_prep: str = ""
    fr_motion: str = ""
    adjs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adj:
    en: str
    forms: tuple[str, str, str, str]  # ms fs mp fp
    liaison: str  # masculine singular before a vowel: bel, vieil, nouvel
    codes: str
    pre: bool
    nouns: tuple[str, ...] = ()  # nouns it fits beyond its codes

    def has(self, flag: str) -> bool:
        return flag in self.codes

    def fits(self, noun: Noun) -> bool:
        return _ADJ_CODE.get(noun.cat, "?") in self.codes or noun.en in self.nouns


@dataclass(frozen=True)
class Verb:
    en: tuple[str, str, str, str, str]  # base, 3rd singular, past, past participle, -ing
    particle: str
    fr: str
    refl: bool
    fixed: str
    fr_prep: str
    frame: str
    args: tuple[str, ...]
    places: tuple[str, ...]
    stative: bool
    generic: bool
    progressive: bool = True


def _en_plural(w: str) -> str:
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    return w[:-1] + "ies" if w.endswith("y") and w[-2] not in "aeiou" else w + "s"


def _fr_plural(w: str) -> str:
    if w.endswith(("s", "x", "z")):
        return w
    if w.endswith(("eau", "au", "eu")):
        return w + "x"
    return w[:-2] + "aux" if w.endswith("al") else w + "s"


def _by_key(entries: Iterable[Noun | Adj]) -> dict:
    """Entries by their English word; the first one wins where a word has several senses."""
    out: dict = {}
    for entry in entries:
        out.setdefault(entry.en, entry)
    return out


def _parse_nouns(cat: str, entries: list[str]) -> list[Noun]:
    nouns = []
    for f in map(_fields, entries):
        en, _, en_pl = f[0].partition("/")
        gender, fr = f[1].split(" ", 1)
        fr, _, fr_pl = fr.partition("/")
        kw: dict = {}
        extra = f[3:]
        if cat == "place":
            en_prep, fr_preps = extra.pop(0).split(" ", 1)
            static, _, motion = fr_preps.partition("/")
            kw.update(en_prep=en_prep, fr_prep=static, fr_motion=motion or static)
        for x in extra:
            if x == "M":
                kw["mass"] = True
            else:
                kw["adjs"] = tuple(x.split())
        nouns.append(Noun(en, en_pl or _en_plural(en), gender, fr, fr_pl or _fr_plural(fr), cat,
                          f[2] if len(f) > 2 else "", **kw))
    return nouns


_ADJ_CODE: dict[str, str] = _T["adjective_codes"]  # noun category -> the code adjectives list
NOUNS = {cat: _parse_nouns(cat, entries) for cat, entries in _T["nouns"].items()}
NOUN_BY_KEY: dict[str, Noun] = _by_key(n for cat in NOUNS.values() for n in cat)


def _fr_feminine(ms: str) -> str:
    if ms.endswith("e") and not ms.endswith("é"):
        return ms
    for old, new in (("eux", "euse"), ("if", "ive"), ("el", "elle"), ("en", "enne"), ("on", "onne"), ("er", "ère"),
                     ("et", "ette"), ("il", "ille")):
        if ms.endswith(old):
            return ms[: -len(old)] + new
    return ms + "e"


def _parse_adjectives(entries: list[str]) -> list[Adj]:
    adjs = []
    for en, fr, spec in map(_fields, entries):
        codes, _, nouns = spec.partition("=")
        forms = fr.split("/")
        if " " in fr:  # invariable phrase: en bois, bon marché, en retard
            forms = [fr] * 4
        elif len(forms) == 1:
            forms.append(_fr_feminine(forms[0]))
        if len(forms) == 2:
            ms, fs = forms
            forms += [ms if ms.endswith(("s", "x")) else ms + "x" if ms.endswith("eau") else ms + "s", fs + "s"]
        adjs.append(Adj(en, tuple(forms[:4]), forms[4] if len(forms) > 4 else "", codes, forms[0] in _PRENOMINAL,
                        _list(nouns)))
    return adjs


ADJECTIVES = _parse_adjectives(_T["adjectives"])
ADJ_BY_KEY: dict[str, Adj] = _by_key(ADJECTIVES)
_CVC = re.compile(r"^[^aeiou]*[aeiou][^aeiouwxy]$")


def _en_forms(head: str) -> tuple[str, str, str, str, str]:
    """base, 3rd singular, past, past participle, -ing from "base[,past[,pp[,ing]]]" (regular forms derived)."""
    forms = head.split(",")
    base = forms[0]
    cvc = bool(_CVC.match(base))  # stop -> stopped, stopping
    if len(forms) > 1:
        past = forms[1]
    elif base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in "aeiou":
        past = base[:-1] + "ied"
    else:
        past = base + base[-1] + "ed" if cvc else base + "ed"
    s3 = "has" if base == "have" else base + "es" if base.endswith("o") else _en_plural(base)  # goes, watches
    if len(forms) > 3:
        ing = forms[3]
    elif base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        ing = base[:-1] + "ing"
    else:
        ing = base + base[-1] + "ing" if cvc else base + "ing"
    return base, s3, past, forms[2] if len(forms) > 2 else past, ing


def _parse_verbs(entries: list[str]) -> list[Verb]:
    verbs = []
    for f in map(_fields, entries):
        head, _, particle = f[0].partition(" ")
        main, _, prep = f[1].partition("+")
        refl = main.startswith(("se ", "s'"))
        main = main[3:] if main.startswith("se ") else main[2:] if refl else main
        inf, _, fixed = main.partition(" ")
        frame, flags = f[2][0], f[2][1:]
        args, places = (_list(f[i]) if len(f) > i else () for i in (3, 4))
        verbs.append(Verb(_en_forms(head), particle, inf, refl, fixed, prep, frame, args, places, "s" in flags,
                          "g" in flags, not set(flags) & set("sn")))
    return verbs


VERBS = _parse_verbs(_T["verbs"])
WANT = next(v for v in VERBS if v.fr == "vouloir")
