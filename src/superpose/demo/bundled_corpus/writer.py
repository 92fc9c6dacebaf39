"""Sentences and documents: the planner's clauses realised in English or French, with dialogue."""
from __future__ import annotations

from dataclasses import replace

from superpose.demo.bundled_corpus.english import en_be, en_clause, en_contract, en_np, en_question, en_rest, en_vp
from superpose.demo.bundled_corpus.french import fr_clause, fr_conj, fr_finish, fr_np, fr_question, fr_rest, fr_vp
from superpose.demo.bundled_corpus.planner import Planner
from superpose.demo.bundled_corpus.syntax import NP, PP, Clause, as_pronoun
from superpose.demo.bundled_corpus.tables import CONNECTOR_PAIRS, INTRO_RELATIVES, NOT_JOBS, NOUNS, SAY, WANT


def _cap(s: str) -> str:
    """Capitalise the first letter, past any opening quote or guillemet."""
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


class Writer(Planner):
    """Plans and realises one document: a short scene in one theme and tense around a main character."""

    # -- realisation ----------------------------------------------------------------------------
    def say(self, c: Clause) -> str:
        return en_clause(c, self.rng) if self.lang == "en" else fr_clause(c)

    def sentence(self, text: str, time: tuple[str, str] | None = None, end: str = ".", front: bool = False) -> str:
        """A finished sentence: time expression, French elision and contraction, capital, end mark."""
        if time:
            t = time[0] if self.lang == "en" else time[1]
            text = f"{t}, {text}" if front or self.rng.random() < 0.6 else f"{text} {t}"
        if self.lang == "fr":
            text = fr_finish(text)
            end = " " + end if end in "?!" else end  # French spacing: « Où est-il ? »
        return _cap(text) + end

    # -- sentences ------------------------------------------------------------------------------
    def intro(self) -> str:
        """The first sentence: who the hero is, the setting, or a first action."""
        rng, h, en = self.rng, self.hero, self.lang == "en"
        r = rng.random()
        if r < 0.35 and h.name and not h.parts:  # Anna was a young baker who lived in Saltmere.
            job = self.noun("person")
            while job.gender != h.gender or "f" in job.themes or job.en in NOT_JOBS:
                job = self.noun("person")
            np = NP(noun=job, gender=h.gender, det="indef", adjs=self.adjs(job, rng.random() < 0.7))
            en_rel, fr_rel = rng.choice(INTRO_RELATIVES)[self.past::2]
            self.last_subject = h
            if en:
                return self.sentence(f"{h.name} {'was' if self.past else 'is'} {en_np(np, rng)} who {en_rel} "
                                     f"{self.town.name}")
            return self.sentence(f"{h.name} {'était' if self.past else 'est'} {fr_np(np)} qui {fr_rel} "
                                 f"{self.town.name}")
        if r < 0.5 and h.noun and not h.plural:  # An old fisherman lived in Saltmere.
            self.last_subject = h
            first = replace(h, det="indef")
            if en:
                return self.sentence(f"{en_np(first, rng)} {'lived' if self.past else 'lives'} in {self.town.name}")
            return self.sentence(f"{fr_np(first)} {'habitait' if self.past else 'habite'} à {self.town.name}")
        if r < 0.7:  # It was a cold morning in Saltmere.
            noun = self.noun("time")
            np = NP(noun=noun, gender=noun.gender, det="indef", adjs=self.adjs(noun, 1), human=False)
            if en:
                return self.sentence(f"it {'was' if self.past else 'is'} {en_np(np, rng)} in {self.town.name}")
            return self.sentence(f"c'{'était' if self.past else 'est'} {fr_np(np)} à {self.town.name}")
        c, time = self.action(subj=h, tense="past" if self.past else "pres")
        self.last_subject = h
        if time is None and not c.freq and not c.verb.stative and c.neg != "never":
            time = self.time("P" if self.past else "H")
        return self.sentence(self.say(c), time)

    def s_action(self, first: bool = False) -> str:
        c, time = self.action()
        text = self.say(c)
        if time is None and c.tense == "past" and not c.neg and not first and self.rng.random() < 0.3:
            then = self.rng.choice(CONNECTOR_PAIRS)[self.lang == "fr"]
            return self.sentence(f"{then}, {text}")
        return self.sentence(text, time)

    def s_describe(self) -> str:
        if self.rng.random() < 0.3:
            subj = self.ref(self.hero)
            self.last_subject = self.hero
            return self.sentence(self.say(self.describe(subj, states=True)))
        return self.sentence(self.say(self.describe()))

    def s_weather(self) -> str:
        text = self.say(self.weather())
        if self.rng.random() < 0.4:  # ... and the sky was grey.
            noun = self.noun("nature")
            sky = Clause(NP(noun=noun, gender=noun.gender, human=False), None, "past" if self.past else "pres",
                         adjs=self.adjs(noun, 1, True))
            text += (" and " if self.lang == "en" else " et ") + self.say(sky)
        time = self.time("P" if self.past else "N") if self.rng.random() < 0.4 else None
        return self.sentence(text, time, front=True)

    def s_there(self) -> str:
        """There was/were ... : things that belong to the place (food at the market, crabs on the beach)."""
        rng = self.rng
        place = self.noun("place")
        tags, indoor = set(place.themes) - set("hri"), "i" in place.themes
        cats = ("food", "container", "household", "small", "readable", "clothing", "instrument", "animal") if indoor \
            else ("animal", "vehicle", "tool", "container", "small") + (("food",) if "k" in place.themes else ())
        pool = [n for cat in cats for n in NOUNS[cat] if not (indoor and cat == "animal" and "f" not in n.themes)]
        weights = [5.0 if set(n.themes) & tags else 1.0 if indoor and not n.themes else 0.2 for n in pool]
        noun = rng.choices(pool, weights)[0]
        neg = "not" if rng.random() < 0.15 else None
        plural = not noun.mass and rng.random() < 0.35
        det = "part" if noun.mass else "num" if plural and rng.random() < 0.5 and not neg else "indef"
        obj = NP(noun=noun, gender=noun.gender, det=det,
                 plural=plural, count=rng.randint(2, 12), adjs=() if neg else self.adjs(noun, rng.random() < 0.5),
                 human=False)
        where = NP(noun=place, gender=place.gender, human=False, adjs=self.adjs(place, rng.random() < 0.25))
        c = Clause(NP(), tense="past" if self.past else "pres", obj=obj, pp=PP("at", where), exist=True, neg=neg)
        return self.sentence(self.say(c))

    def s_complex(self) -> str:
        """Two clauses: because / when / while / although / so / but (parce que, quand, pendant que ...)."""
        rng, en, past = self.rng, self.lang == "en", self.past
        kind = rng.choice(["because", "when", "while", "although", "so", "but"])
        main, _ = self.action(subj=self.ref(self.hero), tense="past" if past else "pres",
                              neg="" if kind == "but" else None, stative=False)
        self.last_subject = self.hero
        state = "prog_past" if past else "pres"
        if kind == "because":
            sub = self.describe(as_pronoun(self.hero), states=True) if rng.random() < 0.5 else self.weather(state)
            return self.sentence(f"{self.say(main)} {'because' if en else 'parce que'} {self.say(sub)}")
        if kind == "when":
            sub = self.weather("past" if past else "pres") if rng.random() < 0.3 else self.action(
                subj=self.ref(self.get_other()), tense="past" if past else "pres", neg="", adverbs=False)[0]
            return self.sentence(f"{'when' if en else 'quand'} {self.say(sub)}, {self.say(main)}")
        if kind == "while":
            sub, _ = self.action(subj=self.ref(self.get_other()), tense=state, frames="it", neg="", adverbs=False)
            return self.sentence(f"{'while' if en else 'pendant que'} {self.say(sub)}, {self.say(main)}")
        if kind == "although":  # bien que + subjonctif for states, même si + indicatif for the weather
            main = replace(main, subj=self.hero_short)
            if rng.random() < 0.5:
                sub = self.describe(as_pronoun(self.hero), states=True)
                fr = "bien que " + self.say(replace(sub, subjunctive=True))
            else:
                sub = self.weather(state)
                fr = "même si " + self.say(sub)
            return self.sentence(f"although {self.say(sub)}, {self.say(main)}" if en else f"{fr}, {self.say(main)}")
        if kind == "so":
            return self.sentence(f"{self.say(self.weather(state))}, {'so' if en else 'alors'} {self.say(main)}")
        second, _ = self.action(subj=as_pronoun(self.hero), tense=main.tense, frames="t", neg="not")
        return self.sentence(f"{self.say(main)}, {'but' if en else 'mais'} {self.say(second)}")

    def s_dialogue(self) -> str:
        """A line of direct speech (statement, question, order, exclamation), sometimes with a reply."""
        rng, en = self.rng, self.lang == "en"
        speaker, listener = (self.hero, self.get_other()) if rng.random() < 0.6 else (self.get_other(), self.hero)
        if as_pronoun(speaker).plural:
            speaker, listener = listener, speaker
        if as_pronoun(speaker).plural:
            return self.s_action()
        me, we = NP(pron=True, person=1), NP(pron=True, person=1, plural=True)
        you = NP(pron=True, person=2, plural=as_pronoun(listener).plural)
        kind = rng.choice(["announce", "ask", "want", "where", "exclaim", "order", "weather"])
        end, reply = ".", None
        if kind == "announce":  # I am going to the market. / Je vais au marché.
            c, _ = self.action(subj=me if rng.random() < 0.8 else we, tense=rng.choice(["prog", "fut", "perf"]),
                               frames="tmu", adverbs=False)
            text = self.say(c)
        elif kind == "ask":  # Have you seen the dog? / As-tu vu le chien ?
            c, _ = self.action(subj=you, tense=rng.choice(["prog", "perf", "fut"]), frames="tm", neg="", adverbs=False)
            text, end = (en_question(c, rng) if en else fr_question(c)), "?"
        elif kind == "want":  # Do you want some tea? / Veux-tu du thé ?
            obj = self.thing(("food", "drink"))
            obj = replace(obj, det="part" if obj.noun.mass else "indef", plural=False, adjs=())
            c = Clause(you, WANT, "pres", obj=obj)
            text, end = (en_question(c, rng) if en else fr_question(c)), "?"
        elif kind == "where":  # Where is my hat? - It is on the chair.
            thing = self.thing(("small", "readable", "clothing", "container"), owner=me if rng.random() < 0.6 else None)
            thing = replace(thing, det="poss" if thing.det == "poss" else "def", adjs=())
            be = en_be(thing, False) if en else ("sont" if thing.plural else "est")
            text, end = (f"where {be} {en_np(thing, rng)}" if en else f"où {be} {fr_np(thing)}"), "?"
            answer = Clause(as_pronoun(replace(thing, human=False)), None, "pres", pp=self.spot())
            reply = self.say(answer)
        elif kind == "exclaim":  # This soup is delicious! / Cette soupe est délicieuse !
            text, end = self.say(self.describe(tense="pres", negatable=False, demonstrative=rng.random() < 0.5)), "!"
        elif kind == "order":  # Bring the basket! / Apporte le panier !
            c, _ = self.action(subj=you, tense="imp", frames="tm", neg="", adverbs=False)
            if c.obj is not None and c.obj.det in ("indef", "num", "gen"):
                c = replace(c, obj=replace(c.obj, det="def", plural=False))
            text, end = " ".join((en_vp(c, rng) + en_rest(c, rng)) if en else (fr_vp(c) + fr_rest(c))), "!"
        else:  # It is raining this morning.
            text = self.say(self.weather("prog")) + " " + self.time("N")[self.lang == "fr"]
        first = self.quote(text, end, speaker, {"?": "ask", "!": "shout"}.get(end, "say"))
        return first + " " + self.quote(reply, ".", listener, "reply") if reply else first

    def quote(self, text: str, end: str, who: NP, verb: str) -> str:
        """Direct speech with its tag: "...," said Anna. / « ... », a dit Marie. / Marie a dit : « ... »"""
        rng, past = self.rng, self.past
        if verb == "say" and rng.random() < 0.2:
            verb = "whisper"
        short = self.hero_short if who is self.hero else who
        pron = self.last_subject is who and rng.random() < 0.5
        plural = as_pronoun(short).plural
        self.last_subject = who
        en_past, en_pres, fr_verb = SAY[verb]
        if self.lang == "en":
            inner = _cap(text)
            if rng.random() < 0.6:
                inner = en_contract(inner)
            tag = en_past if past else verb if plural else en_pres
            name = en_np(as_pronoun(short) if pron else short, rng)
            if not pron and rng.random() < 0.3:
                return _cap(f"{name} {tag}, \"{inner}{end}\"")
            quoted = f"\"{inner}{',' if end == '.' else end}\""
            return quoted + (f" {name} {tag}." if pron or rng.random() < 0.5 else f" {tag} {name}.")
        inner = _cap(fr_finish(text)) + (" " + end if end != "." else "")
        pres, _, pp = fr_conj(fr_verb)
        aux, finite = ("ont", pres[5]) if plural else ("a", pres[2])
        if pron:  # a-t-elle dit, ont-ils dit, dit-elle, demande-t-il
            p = fr_np(as_pronoun(short))
            if past:
                tag = f"{aux}-t-{p} {pp}" if not plural else f"{aux}-{p} {pp}"
            else:
                tag = finite + ("-t-" if finite[-1] in "ae" else "-") + p
        else:
            tag = f"{aux} {pp} {fr_np(short)}" if past else f"{finite} {fr_np(short)}"
            if rng.random() < 0.3:
                said = f"{aux} {pp}" if past else finite
                return _cap(f"{fr_finish(fr_np(short))} {said} : « {inner}{'.' if end == '.' else ''} »")
        return f"« {inner} »{',' if end == '.' else ''} {fr_finish(tag)}."

    def document(self) -> str:
        n = self.rng.randint(3, 7)
        out = [self.intro()]
        kinds = ["action"] * 8 + ["describe"] * 2 + ["weather", "there", "there"] + ["complex"] * 3 + ["dialogue"] * 2
        while len(out) < n:
            kind = self.rng.choice(kinds)
            out.append(self.s_action(len(out) == 1) if kind == "action" else getattr(self, "s_" + kind)())
        return " ".join(out)
