"""French realisation of planned clauses: gender, elision, contractions, adjective agreement and
placement, présent, imparfait, passé composé with avoir/être, ne ... pas, inversion."""
from __future__ import annotations

import re
from dataclasses import replace
from functools import cache

from superpose.demo.bundled_corpus.syntax import NP, Clause, as_pronoun, person_index
from superpose.demo.bundled_corpus.tables import FR_ETRE, FR_IRREGULAR, FR_NUM, H_ASPIRE, Adj

_FR_VOWELS = "aeiouàâäéèêëîïôöûùüœæ"


def _fr_vowel(word: str) -> bool:
    """True when a French word takes elision before it (l'eau, l'homme, but le héron)."""
    w = word.lower()
    return w == "y" or w[:1] in _FR_VOWELS or (w.startswith("h") and not w.startswith(H_ASPIRE))


def _fr_strong_stem(stem: str) -> str:
    """Stem of -er verbs in je/tu/il/ils: nettoie, appelle, achète, préfère."""
    if stem.endswith(("oy", "uy")):
        return stem[:-1] + "i"
    if stem in ("appel", "jet"):
        return stem + stem[-1]
    m = re.search(r"[eé]([^aeiouyéèêàâîôû]+)$", stem)
    if m and (m.group(0)[0] == "é" or len(m.group(1)) == 1):
        return stem[: m.start()] + "è" + m.group(1)
    return stem


@cache
def fr_conj(inf: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Présent and imparfait (6 persons) and past participle."""
    if inf in FR_IRREGULAR:
        pres_s, pp = FR_IRREGULAR[inf].split("|")
        pres = pres_s.split()
    elif inf.endswith("er"):
        stem = inf[:-2]
        strong = _fr_strong_stem(stem)
        nous = stem + "e" if stem.endswith("g") else stem[:-1] + "ç" if stem.endswith("c") else stem
        pres, pp = [strong + "e", strong + "es", strong + "e", nous + "ons", stem + "ez", strong + "ent"], stem + "é"
    elif inf.endswith("ir"):
        stem = inf[:-2]
        pres, pp = [stem + e for e in ("is", "is", "it", "issons", "issez", "issent")], stem + "i"
    else:
        stem = inf[:-2]
        pres, pp = [stem + e for e in ("s", "s", "", "ons", "ez", "ent")], stem + "u"
    istem = "ét" if inf == "être" else pres[3][:-3]
    impf = []
    for end in ("ais", "ais", "ait", "ions", "iez", "aient"):
        s = istem
        if end[0] == "i" and s.endswith("ge"):
            s = s[:-1]
        elif end[0] == "i" and s.endswith("ç"):
            s = s[:-1] + "c"
        impf.append(s + end)
    return tuple(pres), tuple(impf), pp


_FR_ELIDE = {"de": "d'", "je": "j'", "ne": "n'", "que": "qu'", "me": "m'", "te": "t'", "se": "s'"}
_FR_CONTRACT = {("à", "le"): "au", ("à", "les"): "aux", ("de", "le"): "du", ("de", "les"): "des",
                ("jusqu'à", "le"): "jusqu'au", ("jusqu'à", "les"): "jusqu'aux"}


def fr_finish(text: str) -> str:
    """Apply elision (l', d', qu', j', n', s', c'), cet/mon before vowels and contractions (au, du, aux, des)."""
    toks = text.split()
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in ("le", "la") and _fr_vowel(nxt):
            toks[i], toks[i + 1] = "", "l'" + nxt
        elif tok == "ce" and nxt in ("est", "était"):
            toks[i], toks[i + 1] = "", "c'" + nxt
        elif tok == "ce" and _fr_vowel(nxt):
            toks[i] = "cet"
        elif tok in ("ma", "ta", "sa") and _fr_vowel(nxt):
            toks[i] = tok[0] + "on"
        elif tok == "si" and nxt in ("il", "ils"):
            toks[i], toks[i + 1] = "", "s'" + nxt
    toks = [t for t in toks if t]
    out = []
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in _FR_ELIDE and nxt and _fr_vowel(nxt):
            toks[i + 1] = _FR_ELIDE[tok] + nxt
        elif (tok, nxt) in _FR_CONTRACT:
            toks[i + 1] = _FR_CONTRACT[tok, nxt]
        else:
            out.append(tok)
    return " ".join(out)


def _agree(adj: Adj, gender: str, plural: bool, before: str = "") -> str:
    if adj.liaison and gender == "m" and not plural and before and _fr_vowel(before):
        return adj.liaison
    return adj.forms[(2 if plural else 0) + (gender == "f")]


def fr_np(np: NP, neg: bool = False) -> str:
    """French noun phrase; articles are written in full (de le, la eau) and contracted by `fr_finish`."""
    if np.parts:
        return " et ".join(fr_np(p) for p in np.parts)
    if np.pron:
        return _fr_pronoun(np)
    if np.name:
        return np.name
    n, pl, g = np.noun, np.plural, np.noun.gender
    noun = n.fr_pl if pl else n.fr
    pre = [_agree(a, g, pl, noun) for a in np.adjs if a.pre]  # grand, petit, vieux ... come first
    post = [_agree(a, g, pl) for a in np.adjs if not a.pre and " " not in a.forms[0]]
    phrases = [a.forms[0] for a in np.adjs if " " in a.forms[0]]  # en bois, à pois: last, without "et"
    words = pre + [noun] + ([" et ".join(post)] if post else []) + phrases
    det = np.det
    definite = "les" if pl else "le" if g == "m" else "la"
    if det in ("def", "generic"):
        head = definite
    elif det == "none" or neg and det in ("indef", "part"):  # pas de pain, pas d'eau
        head = "de"
    elif det == "indef":
        head = ("de" if pre else "des") if pl else "un" if g == "m" else "une"
    elif det == "part":
        head = "des" if pl else "de le" if g == "m" else "de la"
    elif det == "num":
        head = FR_NUM[np.count]
    elif det == "poss":
        o = np.owner
        forms = (("mon", "ma", "mes"), ("ton", "ta", "tes"), ("son", "sa", "ses"), ("notre", "notre", "nos"),
                 ("votre", "votre", "vos"), ("leur", "leur", "leurs"))[person_index(o)]
        head = forms[2] if pl else forms[g == "f"]
    elif det == "gen":
        return " ".join([definite] + words + ["de", fr_np(np.owner)])
    else:  # demonstrative
        head = "ces" if pl else "ce" if g == "m" else "cette"
    return " ".join([head] + words)


def _fr_pronoun(np: NP, stressed: bool = False) -> str:
    """je/tu/il/elle/nous/vous/ils/elles, or the stressed moi/toi/lui/elle/nous/vous/eux/elles (chez lui)."""
    p = as_pronoun(np)
    word = ("moi", "toi", "lui", "nous", "vous", "eux")[person_index(p)] if stressed else (
        "je", "tu", "il", "nous", "vous", "ils")[person_index(p)]
    return {"il": "elle", "ils": "elles", "lui": "elle", "eux": "elles"}.get(word, word) if p.gender == "f" else word


def _fr_pp_agree(pp: str, subj: NP) -> str:
    p = as_pronoun(subj)
    return pp + ("e" if p.gender == "f" else "") + ("s" if p.plural and not pp.endswith("s") else "")


def fr_vp(c: Clause) -> list[str]:
    v, subj = c.verb, as_pronoun(c.subj)
    i = person_index(subj)
    pres, impf, pp = fr_conj(v.fr)
    refl = ("me", "te", "se", "nous", "vous", "se")[i] if v.refl else ""
    tense = c.tense
    rest: list[str] = []
    if tense in ("pres", "prog"):
        finite = pres[i]
    elif tense in ("prog_past", "habit_past") or (tense == "past" and v.stative):
        finite = impf[i]
    elif tense in ("past", "perf"):
        etre = v.refl or v.fr in FR_ETRE
        finite = fr_conj("être" if etre else "avoir")[0][i]
        rest = [_fr_pp_agree(pp, subj) if etre else pp]
    elif tense == "fut":
        finite, rest = fr_conj("aller")[0][i], [refl, v.fr] if refl else [v.fr]
        refl = ""
    else:  # imperative, 2nd person
        finite = pres[i][:-1] if i == 1 and (pres[i].endswith("es") or v.fr == "aller") else pres[i]
        if refl:
            finite, refl = finite + ("-toi" if i == 1 else "-vous"), ""
    w = (["ne"] if c.neg else []) + ([refl] if refl else []) + [finite]
    w += ([{"not": "pas", "never": "jamais"}[c.neg]] if c.neg else []) + ([c.freq[1]] if c.freq else [])
    return w + rest + (v.fixed.split() if v.fixed else [])


def fr_rest(c: Clause) -> list[str]:
    w: list[str] = []
    neg = c.neg is not None
    if c.obj:
        w += ([c.verb.fr_prep] if c.verb.fr_prep and c.verb.frame == "t" else []) + [fr_np(c.obj, neg)]
    if c.to:
        w += ["à", fr_np(c.to)]
    if c.adv:
        adv = c.adv[1]
        w.append(_fr_pp_agree("seul", c.subj) if adv == "seul" else adv)
    if c.pp:
        np, kind = c.pp.np, c.pp.kind
        verb_prep = c.verb.fr_prep if c.verb and kind == "to" else ""
        if np.home:
            chez = "jusque chez" if verb_prep == "jusqu'à" else f"{verb_prep} chez".strip()  # rentrer chez elle
            w += [chez, _fr_pronoun(c.subj, stressed=True)]
        elif np.name:
            w += [verb_prep or "à", np.name]
        else:
            prep = {"on": "sur", "in": "dans"}.get(kind) or verb_prep or (
                np.noun.fr_motion if kind == "to" else np.noun.fr_prep)
            w += [prep, fr_np(np)]
    return w


def fr_clause(c: Clause) -> str:
    if c.weather:
        return c.weather[4 if c.tense in ("pres", "prog") else 6 if c.tense == "past" else 5]
    if c.exist:
        has = "a" if c.tense in ("pres", "prog") else "avait"
        head = ["il", "ne", "y", has, "pas"] if c.neg else ["il", "y", has]
        return " ".join(head + [fr_np(c.obj, c.neg is not None)] + fr_rest(replace(c, obj=None, neg=None)))
    subj = fr_np(c.subj)
    if c.verb is None:
        p = as_pronoun(c.subj)
        etre = ("sois", "sois", "soit", "soyons", "soyez", "soient") if c.subjunctive else fr_conj("être")[
            0 if c.tense in ("pres", "prog") else 1]
        adjs = [" et ".join(_agree(a, p.gender, p.plural) for a in c.adjs)] if c.adjs else []
        w = [subj] + (["ne", etre[person_index(p)], "pas"] if c.neg else [etre[person_index(p)]]) + adjs
        return " ".join(w + fr_rest(c))
    return " ".join([subj] + fr_vp(c) + fr_rest(c))


def fr_question(c: Clause) -> str:
    """Inversion with tu/vous (As-tu vu ... ?), « est-ce que » otherwise."""
    p = as_pronoun(c.subj)
    if c.subj.pron and p.person == 2 and c.verb and not c.verb.refl:
        vp = fr_vp(replace(c, neg=None, freq=None))
        return " ".join([vp[0] + "-" + fr_np(c.subj)] + vp[1:] + fr_rest(c))
    return "est-ce que " + fr_clause(c)
