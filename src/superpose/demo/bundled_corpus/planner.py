"""The planner: one document is a short scene around a main character, in one theme and tense.

It decides who does what, where and when, as language-independent clauses (`syntax`); the same
random choices serve both languages, and `writer` turns the clauses into sentences.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import replace
from functools import cache

from superpose.demo.bundled_corpus.syntax import NP, PP, Clause, as_pronoun
from superpose.demo.bundled_corpus.tables import (
    ADJ_BY_KEY,
    ADJECTIVES,
    ADVERBS_FOR,
    BOXES,
    CLASHES,
    COUNTED,
    DAYS,
    EN_NUM,
    FAST,
    FIRST_NAMES,
    FR_NUM,
    FREQ_PAIRS,
    KIN,
    LOUD,
    MANNER_PAIRS,
    NOUN_BY_KEY,
    NOUNS,
    ONCE,
    STATES,
    STILL,
    SURFACES,
    SURNAMES,
    TIMES,
    TITLES,
    TOWN_PARTS,
    VERBS,
    WEATHER_ROWS,
    Adj,
    Noun,
    Verb,
)

THEMES = "vtnfscwk"  # village, travel, nature/weather, family, sea, city, work, kitchen/food


@cache
def _noun_pool(spec: tuple[str, ...], theme: str) -> tuple[list[Noun], list[float]]:
    """Nouns named by categories or keys, with cumulative weights favouring the document's theme."""
    pool = [n for s in spec for n in (NOUNS[s] if s in NOUNS else [NOUN_BY_KEY[s]])]
    weights = [4.0 if theme in n.themes else 1.5 if not n.themes.strip("hri") else 0.5 for n in pool]
    return pool, list(itertools.accumulate(weights))


@cache
def _places_for(noun: Noun) -> tuple[str, ...]:
    """Places where a thing plausibly is: those sharing one of its themes (a cow: farm, barn, field)."""
    tags = set(noun.themes) - set("hri")
    return tuple(p.en for p in NOUNS["place"] if tags & set(p.themes))


@cache
def _adjective_pool(noun: Noun, predicative: bool) -> list[Adj]:
    pool = [ADJ_BY_KEY[a] for a in noun.adjs] if noun.adjs else [a for a in ADJECTIVES if a.fits(noun)]
    return [a for a in pool if not a.has("A" if predicative else "P")]


@cache
def _verb_pool(frames: str, tense: str, animal: str) -> list[Verb]:
    """Verbs that fit the frames, the tense and the subject (a person, or the key of an animal)."""
    return [v for v in VERBS if v.frame in frames and not (v.stative and tense in ("fut", "perf", "imp"))
            and (v.progressive or tense not in ("imp", "prog", "prog_past"))
            and not (tense == "imp" and v.en[0] == "arrive")
            and not (v.stative and tense in ("prog", "prog_past")) and (
                not animal and (v.frame != "i" or not v.args or "person" in v.args)
                or animal and v.frame == "i" and ("animal" in v.args or animal in v.args))]


_TIMES = TIMES + [
    (f"on {day}", fr, "P") for day, fr in DAYS] + [(f"on {day}s", f"le {fr}", "H") for day, fr in DAYS] + [
    (f"next {day}", f"{fr} prochain", "F") for day, fr in DAYS]
_HOURS = [(f"at {EN_NUM[h]} o'clock", f"à {FR_NUM[h]} heure" + "s" * (h > 1), "PH") for h in range(1, 12)]
_TIME_TAGS = {"past": "P", "prog_past": "P", "habit_past": "H", "pres": "H", "prog": "N", "fut": "F"}


def _manner(v: Verb, subj: NP) -> list[tuple[str, ...]]:
    """Manner adverbs that suit a verb and its subject (together: plural only; no "shouted quietly")."""
    kind = "still" if v.en[0] in STILL else "once" if v.en[0] in ONCE and v.frame == "i" else v.frame
    plural = as_pronoun(subj).plural
    return [a for a in MANNER_PAIRS
            if (a[0] in ADVERBS_FOR[kind] if kind in ADVERBS_FOR else a[0] != "carefully")
            and a[0] != ("alone" if plural else "together")
            and not (v.en[0] in LOUD and a[0] in ("quietly", "silently"))
            and not (v.en[0] in FAST and a[0] in ("slowly", "calmly", "patiently"))]


class Planner:
    """Plans one document's clauses: its theme, tense, town and people, and who does what, where and when."""

    def __init__(self, lang: str, rng: random.Random) -> None:
        self.lang, self.rng = lang, rng
        self.theme = rng.choice(THEMES)
        self.past = rng.random() < 0.7
        self.town = self._town()
        self.hero = self._person(main=True)
        # later mentions: "Anna", "the fisherman" (not "the old fisherman" again)
        self.hero_short = self.hero if self.hero.noun is None else replace(self.hero, adjs=(), det="def")
        self.other: NP | None = None
        self.last_subject: NP | None = None

    # -- people, things, places, times --------------------------------------------------------
    def _town(self) -> NP:
        first, second, suffix = TOWN_PARTS[self.lang]
        a = self.rng.choice(first.split())
        b = self.rng.choice([part for part in second.split() if part != a.lower()])
        return NP(name=a + b + (suffix if self.rng.random() < 0.15 else ""), human=False)

    def _name(self, gender: str) -> NP:
        if self.rng.random() < 0.2:  # Mr Hale, madame Moreau
            name = TITLES[self.lang][gender] + " " + self.rng.choice(SURNAMES[self.lang].split())
        else:
            name = self.rng.choice(FIRST_NAMES[self.lang][gender].split())
        return NP(name=name, gender=gender)

    def noun(self, spec: tuple[str, ...] | str) -> Noun:
        pool, weights = _noun_pool((spec,) if isinstance(spec, str) else spec, self.theme)
        return self.rng.choices(pool, cum_weights=weights)[0]

    def adjs(self, noun: Noun, k: int, predicative: bool = False) -> tuple[Adj, ...]:
        """Up to k adjectives; two attributive ones are "plain + colour/material" (a small red box)."""
        pool = _adjective_pool(noun, predicative)
        if not pool or k == 0:
            return ()
        first = self.rng.choice(pool if predicative else [a for a in pool if not a.has("C")] or pool)
        if k == 1:
            return (first,)
        if predicative:
            second = self.rng.choice(pool)
            clash = second.forms[0] == first.forms[0] or any({first.en, second.en} <= g for g in CLASHES)
            return (first,) if clash else (first, second)
        colours = [a for a in pool if a.has("C") and not first.has("C")]
        return (first, self.rng.choice(colours)) if colours else (first,)

    def _person(self, main: bool = False) -> NP:
        r = self.rng.random()
        if r < 0.5:
            return self._name(self.rng.choice("mf"))
        if main and r < 0.6:  # Tom and Anna
            a, b = self._name(self.rng.choice("mf")), self._name(self.rng.choice("mf"))
            return NP(parts=(a, b), plural=True) if a.name != b.name else a
        noun = self.noun("person")
        while noun.en in KIN:
            noun = self.noun("person")
        if r > 0.88:  # the sailors, three students
            return NP(noun=noun, gender=noun.gender, plural=True, det="def" if r < 0.94 else "num",
                      count=self.rng.randint(2, 4), adjs=self.adjs(noun, self.rng.random() < 0.3))
        return NP(noun=noun, gender=noun.gender, adjs=self.adjs(noun, self.rng.random() < 0.6))

    def get_other(self) -> NP:
        """The second character: a relative of the hero ("her brother") or someone else."""
        if self.other is None:
            if self.rng.random() < 0.4:
                h = as_pronoun(self.hero)
                spouses = {"husband", "wife"} if h.plural else {"husband" if h.gender == "m" else "wife"}
                noun = self.rng.choice([n for n in NOUNS["person"] if "f" in n.themes and n.en not in spouses])
                self.other = NP(noun=noun, gender=noun.gender, det="poss", owner=h)
            else:
                taken = {self.hero.name} | {p.name for p in self.hero.parts}
                other = self._person()
                while other.name in taken or other.parts:
                    other = self._person()
                self.other = replace(other, adjs=())
        return self.other

    def ref(self, who: NP) -> NP:
        """A later mention: a pronoun when it continues the previous subject, else a short form."""
        short = self.hero_short if who is self.hero else who
        return as_pronoun(short) if self.last_subject is who and self.rng.random() < 0.7 else short

    def thing(self, spec, owner: NP | None = None, neg: bool = False, generic: bool = False,
              counted: bool = True, people: bool = True) -> NP:
        """An object noun phrase; `owner` (the subject) owns possessives, `neg` rules out numbers."""
        rng = self.rng
        noun = self.noun(spec)
        while noun.en in ("husband", "wife") or owner is not None and owner.noun is noun:
            noun = self.noun(spec)
        if noun.cat == "person":
            other = self.get_other()
            if people and owner is not None and other is not owner and other is not self.hero and rng.random() < 0.6:
                return other
            if owner is not None and noun.en in KIN:
                return NP(noun=noun, gender=noun.gender, det="poss", owner=as_pronoun(owner))
            return NP(noun=noun, gender=noun.gender, adjs=self.adjs(noun, rng.random() < 0.3))
        if noun.cat == "place":
            own = owner is not None and "h" in noun.themes and rng.random() < 0.3
            return NP(noun=noun, gender=noun.gender, det="poss" if own else "def", owner=owner and as_pronoun(owner),
                      human=False, adjs=self.adjs(noun, rng.random() < 0.2))
        if generic:  # likes cheese / aime le fromage
            return NP(noun=noun, gender=noun.gender, det="generic", plural=not noun.mass, human=False)
        r, plural, owner_np = rng.random(), not noun.mass and rng.random() < 0.25, owner and as_pronoun(owner)
        ownable = owner is not None and noun.cat not in ("food", "drink", "sound", "nature")
        named = [p for p in (self.other, self.hero) if p is not None and p.name and p is not owner]
        if r < 0.4:
            det = "def"
        elif r < 0.7 or not ownable:
            det = "part" if noun.mass else "indef"
        elif r < 0.8 and named and people:  # Tom's basket / le panier de Luc
            det, owner_np, plural = "gen", named[0], False
        elif r < 0.9:
            det = "poss"
        elif noun.mass or neg or not counted:
            det, plural = "part" if noun.mass else "indef", False
        else:
            det, plural = "num", True
        k = 0 if rng.random() < 0.55 else 1 if rng.random() < 0.75 else 2
        return NP(noun=noun, gender=noun.gender, det=det, plural=plural, count=rng.randint(2, 12),
                  owner=owner_np, adjs=self.adjs(noun, k), human=False)

    def place(self, spec: tuple[str, ...] = (), owner: NP | None = None, motion: bool = False) -> NP:
        """A place: the town, home (when going somewhere), or a place noun; rooms are not destinations."""
        r = self.rng.random()
        if not spec and r < 0.12:
            return self.town
        if not spec and motion and r < 0.2 and owner is not None:
            return NP(home=True)
        noun = self.noun(spec or "place")
        while motion and "r" in noun.themes:
            noun = self.noun(spec or "place")
        if owner is not None and "h" in noun.themes and self.rng.random() < 0.35:
            return NP(noun=noun, gender=noun.gender, det="poss", owner=as_pronoun(owner), human=False)
        return NP(noun=noun, gender=noun.gender, human=False, adjs=self.adjs(noun, self.rng.random() < 0.2))

    def spot(self) -> PP:
        """Where a small thing is put or lies: on a surface (the table) or in a box (the basket)."""
        target = NOUN_BY_KEY[self.rng.choice(SURFACES + BOXES)]
        return PP("on" if target.en in SURFACES else "in", NP(noun=target, gender=target.gender, human=False))

    def time(self, tags: str) -> tuple[str, str] | None:
        """A time expression for these tense tags; clock times only now and then."""
        pool = _HOURS if "N" not in tags and "F" not in tags and self.rng.random() < 0.15 else _TIMES
        options = [t for t in pool if set(t[2]) & set(tags)]
        return self.rng.choice(options)[:2] if options else None

    def tense(self) -> str:
        if self.past:
            return self.rng.choices(["past", "prog_past", "habit_past"], [70, 12, 18])[0]
        return self.rng.choices(["pres", "prog"], [65, 35])[0]

    # -- clauses --------------------------------------------------------------------------------
    def action(self, subj: NP | None = None, tense: str | None = None, frames: str = "itmdu",
               neg: str | None = None, adverbs: bool = True, stative: bool = True
               ) -> tuple[Clause, tuple[str, str] | None]:
        """A random action clause and a matching time expression (or None).

        `neg=""` forbids negation; `adverbs=False` leaves out manner, frequency and time (questions,
        orders and subordinate clauses) and keeps the story's people out of the objects.
        """
        rng = self.rng
        who = None
        if subj is None:
            who = self.hero if rng.random() < 0.7 else self.get_other()
            subj = self.ref(who)
            self.last_subject = who
        tense = tense or self.tense()
        animal = subj.noun.en if subj.noun is not None and subj.noun.cat == "animal" else ""
        v = rng.choice([v for v in _verb_pool(frames, tense, animal) if stative or not v.stative])
        if neg is None and tense != "imp":
            r = rng.random()
            neg = "not" if r < 0.08 else "never" if r < 0.11 and tense in ("pres", "past", "habit_past") else None
        obj = to = pp = None
        if v.frame == "t":
            obj = self.thing(v.args, owner=subj, neg=bool(neg), generic=v.generic, counted=v.en[0] in COUNTED,
                             people=adverbs and subj.person == 3)
            if v.fr_prep == "de" or (obj.noun and obj.noun.cat in ("vehicle", "instrument")):
                obj = replace(obj, det="def", plural=False, adjs=())  # play the violin, take the bus
            near = v.places or (_places_for(obj.noun) if obj.noun and obj.noun.cat not in ("place", "person") else ())
            if near and not v.stative and rng.random() < (0.3 if v.places else 0.12):
                pp = PP("at", self.place(near, owner=subj))
        elif v.frame == "i" and v.places != ("-",) and (v.en[0] in ("arrive", "stay") or rng.random() < 0.45):
            pp = PP("at", self.place(v.places, owner=subj))
        elif v.frame == "m":
            pp = PP("to", self.place(v.places, owner=subj, motion=True))
        elif v.frame == "d":
            obj = self.thing(v.args, owner=subj, neg=bool(neg), counted=v.en[0] in ("give", "send"), people=False)
            to = self.hero_short if who is not None and who is not self.hero else self.get_other()
        elif v.frame == "u":
            obj = self.thing(("small", "food", "readable", "clothing"), owner=subj, neg=bool(neg))
            pp = self.spot()
        adv = freq = time = None
        if adverbs and v.frame in "itm" and not v.stative and not neg and tense != "imp" and rng.random() < 0.2:
            adv = rng.choice(_manner(v, subj))
        if not adverbs or adv or v.stative:
            pass  # one adverbial is enough; states take none
        elif tense in ("habit_past", "pres") and not neg and rng.random() < 0.4:
            freq = rng.choice(FREQ_PAIRS)
        elif tense in _TIME_TAGS and neg != "never":
            if rng.random() < (0.75 if tense in ("habit_past", "pres") else 0.3):
                time = self.time(_TIME_TAGS[tense])
        return Clause(subj, v, tense, obj, to, pp, neg=neg or None, adv=adv, freq=freq), time

    def describe(self, subj: NP | None = None, tense: str | None = None, states: bool = False,
                 negatable: bool = True, demonstrative: bool = False) -> Clause:
        """"She was tired." / "The market was busy and noisy." """
        rng = self.rng
        tense = tense or ("past" if self.past else "pres")
        if subj is not None:
            adj = ADJ_BY_KEY[rng.choice(STATES)] if states else self.adjs(NOUNS["person"][0], 1, True)[0]
            return Clause(subj, None, tense, adjs=(adj,))
        noun = self.noun(rng.choice(["place", "food", "nature", "container", "household", "animal", "vehicle"]))
        plural = not noun.mass and noun.cat not in ("nature", "place") and rng.random() < 0.2
        np = NP(noun=noun, gender=noun.gender, det="dem" if demonstrative else "def", human=False, plural=plural)
        adjs = self.adjs(noun, 1 + (rng.random() < 0.3), predicative=True) or (ADJ_BY_KEY["old"],)
        neg = "not" if len(adjs) == 1 and negatable and rng.random() < 0.1 else None
        return Clause(np, None, tense, adjs=adjs, neg=neg)

    def weather(self, tense: str | None = None) -> Clause:
        tense = tense or (self.rng.choice(["prog_past", "prog_past", "past"]) if self.past else "prog")
        return Clause(NP(), weather=self.rng.choice(WEATHER_ROWS), tense=tense)
