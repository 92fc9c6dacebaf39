"""English realisation of planned clauses: agreement, do-support, a/an, adjective order, contractions."""
from __future__ import annotations

import random
from dataclasses import replace

from superpose.demo.bundled_corpus.syntax import NP, Clause, as_pronoun
from superpose.demo.bundled_corpus.tables import EN_CONTRACTIONS, EN_NUM


def _en_a(word: str) -> str:
    w = word.lower()
    vowel = w[:1] in "aeiou" and not w.startswith(("use", "uni", "one", "eu"))
    return "an" if vowel or w.startswith(("hour", "honest", "heir")) else "a"


def _en_pronoun(np: NP, obj: bool = False) -> str:
    if np.plural:
        return {1: ("we", "us"), 2: ("you", "you"), 3: ("they", "them")}[np.person][obj]
    if np.person < 3:
        return (("I", "me"), ("you", "you"))[np.person - 1][obj]
    if not np.human:
        return "it"
    return ("he", "him")[obj] if np.gender == "m" else "her" if obj else "she"


def en_np(np: NP, rng: random.Random, neg: bool = False, obj: bool = False) -> str:
    """English noun phrase; "some"/bare plural and mass nouns alternate, "any" under negation."""
    if np.parts:
        return " and ".join(en_np(p, rng) for p in np.parts)
    if np.pron:
        return _en_pronoun(np, obj)
    if np.home:
        return "home"
    if np.name:
        return np.name
    n = np.noun
    adjs = sorted(np.adjs, key=lambda a: a.has("C"))
    words = [a.en for a in adjs] + [n.en_pl if np.plural else n.en]
    det = np.det
    if det == "def":
        return " ".join(["the"] + words)
    if det == "generic" or (det in ("indef", "part") and not neg and (np.plural or n.mass) and rng.random() < 0.5):
        return " ".join(words)
    if det in ("indef", "part"):
        head = ("any" if neg else "some") if (np.plural or n.mass) else _en_a(words[0])
    elif det == "num":
        head = EN_NUM[np.count]
    elif det == "poss":
        o = np.owner
        head = ("our", "your", "their")[o.person - 1] if o.plural else ("my", "your")[o.person - 1] if o.person < 3 \
            else "its" if not o.human else "his" if o.gender == "m" else "her"
    elif det == "gen":
        head = en_np(np.owner, rng) + "'s"
    elif det == "dem":
        head = "these" if np.plural else "this"
    else:
        head = "no"
    return " ".join([head] + words)


def en_be(subj: NP, past: bool) -> str:
    p = as_pronoun(subj)
    if past:
        return "was" if not p.plural and p.person != 2 else "were"
    return "am" if p.person == 1 and not p.plural else "is" if p.person == 3 and not p.plural else "are"


def en_vp(c: Clause, rng: random.Random) -> list[str]:
    v, subj, neg = c.verb, as_pronoun(c.subj), c.neg
    base, s3, past, pp, ing = v.en
    sg3 = subj.person == 3 and not subj.plural
    tense = c.tense
    if not v.progressive and tense in ("prog", "prog_past"):
        tense = "pres" if tense == "prog" else "past"
    adverb = [neg or c.freq[0]] if (neg or c.freq) else []
    if tense == "pres":
        w = ["does" if sg3 else "do", "not", base] if neg == "not" else adverb + [s3 if sg3 else base]
    elif tense in ("past", "habit_past"):
        w = ["did", "not", base] if neg == "not" else adverb + [past] if adverb else (
            ["used", "to", base] if tense == "habit_past" and rng.random() < 0.25 else [past])
    elif tense in ("prog", "prog_past"):
        w = [en_be(subj, tense == "prog_past")] + adverb + [ing]
    elif tense == "perf":
        w = ["has" if sg3 else "have"] + adverb + [pp]
    elif tense == "fut":
        w = ["will"] + adverb + [base]
    else:  # imperative
        w = (["do", "not"] if neg else []) + [base]
    return w + v.particle.split()


def en_rest(c: Clause, rng: random.Random) -> list[str]:
    """Everything after the verb group: objects, adverb, prepositional phrase."""
    w: list[str] = []
    neg = c.neg is not None
    if c.verb and c.verb.frame == "d" and rng.random() < 0.4 and not c.to.pron:
        w += [en_np(c.to, rng, obj=True), en_np(c.obj, rng, neg, obj=True)]
    else:
        if c.obj:
            w.append(en_np(c.obj, rng, neg, obj=True))
        if c.to:
            w += ["to", en_np(c.to, rng, obj=True)]
    if c.adv:
        w.append(c.adv[0])
    if c.pp:
        np, kind = c.pp.np, c.pp.kind
        if np.home:
            w.append("at home" if kind == "at" else "home")
        else:
            if kind == "to":
                prep = c.verb.args[0] if c.verb.args[0] != "@" else None
            else:
                prep = kind if kind in ("on", "in") else None
            if prep is None:
                prep = np.noun.en_prep if np.noun else "in"
            w += [prep, en_np(np, rng, obj=True)]
    return w


def en_clause(c: Clause, rng: random.Random) -> str:
    if c.weather:
        return c.weather[{"pres": 0, "prog": 1, "past": 3}.get(c.tense, 2)]
    if c.exist:
        past = c.tense not in ("pres", "prog")
        be = ("were" if c.obj.plural else "was") if past else ("are" if c.obj.plural else "is")
        obj = replace(c.obj, det="none") if c.neg else c.obj
        return " ".join(["there", be, en_np(obj, rng)] + en_rest(replace(c, obj=None, neg=None), rng))
    subj = en_np(c.subj, rng)
    if c.verb is None:
        be = en_be(c.subj, c.tense not in ("pres", "prog"))
        adjs = [" and ".join(a.en for a in c.adjs)] if c.adjs else []
        return " ".join([subj, be] + ([c.neg] if c.neg else []) + adjs + en_rest(c, rng))
    return " ".join([subj] + en_vp(c, rng) + en_rest(c, rng))


def en_question(c: Clause, rng: random.Random) -> str:
    """Yes/no question: auxiliary or be in front, do-support otherwise."""
    subj = en_np(c.subj, rng)
    if c.verb is None:
        return " ".join([en_be(c.subj, c.tense not in ("pres", "prog")), subj, " and ".join(a.en for a in c.adjs)])
    vp = en_vp(replace(c, neg=None, freq=None), rng)
    if vp[0] in ("am", "is", "are", "was", "were", "has", "have", "will"):
        words = [vp[0], subj] + vp[1:]
    else:
        sg3 = as_pronoun(c.subj).person == 3 and not as_pronoun(c.subj).plural
        aux = "did" if c.tense in ("past", "habit_past") else "does" if sg3 else "do"
        words = [aux, subj, c.verb.en[0]] + c.verb.particle.split()
    return " ".join(words + en_rest(c, rng))


def en_contract(text: str) -> str:
    """Spoken contractions for dialogue: I am -> I'm, do not -> don't."""
    for pattern, contracted in EN_CONTRACTIONS:
        text = pattern.sub(contracted, text)
    return text
