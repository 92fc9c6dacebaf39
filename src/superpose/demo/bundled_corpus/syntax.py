"""Noun phrases and clauses, independent of language: the planner builds them, `english` and `french` realise them."""
from __future__ import annotations

from dataclasses import dataclass

from superpose.demo.bundled_corpus.tables import Adj, Noun, Verb


@dataclass(frozen=True)
class NP:
    noun: Noun | None = None
    name: str | None = None
    gender: str = "m"
    plural: bool = False
    person: int = 3
    det: str = "def"  # def indef part generic num poss gen dem none
    adjs: tuple[Adj, ...] = ()
    owner: NP | None = None
    count: int = 0
    parts: tuple[NP, ...] = ()
    pron: bool = False
    home: bool = False
    human: bool = True


@dataclass(frozen=True)
class PP:
    kind: str  # at (static), to (motion), on / in (put)
    np: NP


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: Verb | None = None  # None: copula with adjs
    tense: str = "past"  # pres prog past prog_past habit_past perf fut imp
    obj: NP | None = None
    to: NP | None = None
    pp: PP | None = None
    adjs: tuple[Adj, ...] = ()
    neg: str | None = None  # not / never
    adv: tuple[str, str] | None = None
    freq: tuple[str, str] | None = None
    weather: tuple[str, ...] | None = None
    exist: bool = False
    subjunctive: bool = False


def as_pronoun(np: NP) -> NP:
    """The pronoun features of a noun phrase (he/she/it/they, il/elle/ils/elles)."""
    if np.pron:
        return np
    if np.parts:
        return NP(pron=True, plural=True, gender="f" if all(p.gender == "f" for p in np.parts) else "m")
    return NP(pron=True, plural=np.plural, gender=np.gender, person=np.person, human=np.human)


def person_index(np: NP) -> int:
    """0-5 for I, you, he/she/it, we, you (plural), they: the column of a conjugation table."""
    return np.person - 1 + 3 * np.plural
