"""Causal output mixtures, routers and oracles on tiny random models; unlabelled and code-switched sets."""
import json

import pytest
import torch
from helpers import VOCAB, char_tokenizer, paper_model, tiny_model, tiny_pair, write_domains

from superpose.cli.commands import main
from superpose.compare import BaselineContext, References, build_scorer
from superpose.compare.router import RouterScorer
from superpose.evaluation.evaluate import evaluate
from superpose.model.superposed import SuperposedModel


def _refs(models: dict, ids: torch.Tensor, domain=None) -> References:
    with torch.no_grad():
        logits = {name: m(ids).logits for name, m in models.items()}
    return References(logits, {name: 0.0 for name in models}, ids.clone(), domain)


def _nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) per-token NLL of the next token."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")


@pytest.fixture(scope="module")
def peaked():
    # a wide init makes random tiny models confident, so evidence separates them quickly
    return {"base": tiny_model("gpt2", 0, init=0.5), "fr": tiny_model("gpt2", 1, init=0.5)}


def _scorer(method, point=None, models=None):
    return build_scorer(method, point, BaselineContext(models or {}, char_tokenizer()))


def test_bayes_equals_a_slow_per_token_mixture_and_one_model_is_itself(peaked):
    ids = torch.randint(1, VOCAB, (2, 14), generator=torch.Generator().manual_seed(0))
    refs = _refs(peaked, ids)
    got = _scorer("bayes").logits(ids, None, refs)  # (B, T, V) log-probs
    p = {n: torch.softmax(x.double(), -1) for n, x in refs.logits.items()}
    for b in range(2):
        w = {n: 0.5 for n in p}
        for t in range(13):
            expected = sum(w[n] * p[n][b, t] for n in p).log()
            torch.testing.assert_close(got[b, t].double(), expected, atol=1e-5, rtol=0)
            w = {n: w[n] * p[n][b, t, ids[b, t + 1]] for n in p}
            total = sum(w.values())
            w = {n: v / total for n, v in w.items()}
    alone = _refs({"base": peaked["base"]}, ids)
    torch.testing.assert_close(_scorer("bayes").logits(ids, None, alone),
                               torch.log_softmax(alone.logits["base"], -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(_scorer("fixed_share", 0.0).logits(ids, None, refs), got)


def test_fixed_share_follows_a_switch_between_two_models_own_greedy_text(peaked):
    a, b = peaked["base"], peaked["fr"]
    with torch.no_grad():
        first = a.generate(torch.tensor([[5]]), max_new_tokens=24, do_sample=False, pad_token_id=0)
        both = b.generate(first, max_new_tokens=24, do_sample=False, pad_token_id=0)  # B continues in its own way
    scorer = _scorer("fixed_share", 0.02)
    scorer.logits(both, None, _refs(peaked, both))
    weight_b = scorer.last_weights[1, 0]  # (T,): weight on model B when predicting token t+1
    switch = first.shape[1] - 1  # position whose next token is B's first
    assert weight_b[switch - 1] < 0.1  # A's text: the weight is on A
    assert (weight_b[switch + 6 : -1] > 0.9).all()  # within a few tokens of B's text it moves to B


def test_causal_router_at_t_ignores_later_tokens(tmp_path):
    base, expert = tiny_pair("gpt2")
    en, fr = write_domains(tmp_path)
    context = BaselineContext({"base": base, "fr": expert}, char_tokenizer(), {"base": str(en), "fr": str(fr)})
    router = RouterScorer.build(context, ("router", None))
    tok = char_tokenizer()
    # an English start, then French for most of the line: the whole line reads French, its prefixes English
    ids = torch.tensor([tok("the cat sat LE CHAT EST SUR LA TABLE UNE FILLE MANGE DU PAIN")["input_ids"]])
    choice = router.prefix_choice(ids, torch.ones_like(ids))
    changed = ids.clone()
    changed[0, 10:] = torch.tensor(
        tok("the dog ran home and we like to read books in the park today")["input_ids"][: ids.shape[1] - 10])
    assert torch.equal(router.prefix_choice(changed, torch.ones_like(ids))[:, :10], choice[:, :10])
    assert (choice[0, 2:9] == 0).all() and (choice[0, -5:] == 1).all()  # English prefixes: base; later: French
    logits = router.logits(ids, torch.ones_like(ids), _refs(context.models, ids))
    for t in range(ids.shape[1]):  # one stack's prediction per token: the chosen one's
        with torch.no_grad():
            chosen = context.models[["base", "fr"][choice[0, t]]](ids).logits[0, t]
        torch.testing.assert_close(logits[0, t], torch.log_softmax(chosen, -1))


def test_oracle_token_is_below_every_model_at_every_token(peaked):
    ids = torch.randint(1, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
    refs = _refs(peaked, ids)
    best = _nll(_scorer("oracle_token").logits(ids, None, refs), ids)
    for logits in refs.logits.values():
        assert (best <= _nll(logits, ids) + 1e-6).all()
    assert _scorer("oracle_token").reads_answer


def test_unlabelled_set_scored_without_labels_and_its_oracle_picks_each_sequence_in_hindsight(tmp_path):
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(ae_layers=[1])).eval()
    en, fr = write_domains(tmp_path, repeat=2)
    mixed = tmp_path / "both.txt"
    mixed.write_text(en.read_text() + "\n" + fr.read_text())
    result = evaluate(model, char_tokenizer(), {"novels": str(mixed)}, baselines=["oracle", "bayes"],
                      block_size=24, progress=False)
    assert result["labels"] == {"novels": None}
    models = result["models"]
    nll = {name: models[name]["novels"]["nll"] for name in ("base", "expert:fr", "oracle", "bayes")}
    assert nll["oracle"] <= min(nll["base"], nll["expert:fr"])
    assert nll["oracle"] < max(nll["base"], nll["expert:fr"])
    assert result["reads_answer"] == ["oracle"] and result["stacks_per_token"]["bayes"] == 2


def test_code_switched_set_reports_languages_switches_and_weights(tmp_path, capsys):
    base, expert = tiny_pair("gpt2", init=0.5)
    for name, m in (("base", base), ("fr", expert)):
        m.save_pretrained(tmp_path / name)
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(ae_layers=[1]), str(tmp_path / "base"),
                                        {"fr": str(tmp_path / "fr")})
    model.save_pretrained(tmp_path / "run")
    char_tokenizer().save_pretrained(tmp_path / "run")
    en, fr = write_domains(tmp_path, repeat=2)
    (tmp_path / "en.txt").write_text(". ".join(en.read_text().splitlines()) + ".")
    (tmp_path / "fr.txt").write_text(". ".join(fr.read_text().splitlines()) + ".")
    mixed = tmp_path / "mixed.jsonl"
    assert main(["mix-data", "--data", f"base={en}", "--data", f"fr={fr}", "--out", str(mixed), "--seed", "0"]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run"), "--data", f"switch={mixed}", "--baselines", "fixed_share:0.05",
                 "--baselines", "oracle_token", "--baselines", "fixed_share_mix:0.05", "--baselines", "fixed_share_mix",
                 "--block-size", "64", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "code-switched set 'switch'" in printed and "oracle_token †" in printed
    metrics = json.loads(out.read_text())["models"]
    share = metrics["fixed_share:0.05"]["switch"]
    # a grid of one rate is that rate's fixed-share mixture; the default grid is another row
    assert metrics["fixed_share_mix:0.05"]["switch"]["ppl"] == pytest.approx(share["ppl"], rel=1e-5)
    assert metrics["fixed_share_mix"]["switch"]["ppl"] != pytest.approx(share["ppl"], rel=1e-5)
    assert share["tokens_source:base"] + share["tokens_source:fr"] <= share["tokens"]
    assert share["tokens_source:base"] > 0 and share["tokens_source:fr"] > 0 and share["tokens_after_switch"] > 0
    assert 0.0 <= share["own_weight_share"] <= 1.0 and "own_weight_share" in metrics["oracle_token"]["switch"]
    assert "own_weight_share" not in metrics["superposed"]["switch"]  # one alpha per layer: no per-token weights


def test_own_weight_share_counts_tokens_whose_heaviest_weight_is_their_sources_model():
    from superpose.evaluation.scoring import Tally, count_own_weight
    # position t predicts token t+1; sources of tokens 0..5: base base fr fr <eos> fr
    sources = torch.tensor([[0, 0, 1, 1, -1, 1]])
    labels = torch.tensor([[4, 5, 6, 7, 0, 8]])
    weights = torch.tensor([[[0.9, 0.2, 0.4, 0.6, 0.5, 0.3]]]).expand(1, 1, 6)  # weight on model 0 ...
    weights = torch.cat([weights, 1 - weights])  # (M=2, B=1, T=6)
    tally = Tally()
    count_own_weight(tally, weights, sources, labels, torch.tensor([0, 1]))
    # targets 1..5: base (heaviest 0 at t=0: right), fr (t=1: heaviest 1, right), fr (t=2: 1, right),
    # <eos> (not counted), fr (t=4: tie 0.5 -> argmax 0, wrong)
    assert tally.own_weight == [3, 4]


def test_both_routers_share_one_classifier_per_context(tmp_path, monkeypatch):
    from superpose.compare import router

    calls = []
    monkeypatch.setattr(router, "train_classifier", lambda context: calls.append(context) or ("classifier", 64))
    context = BaselineContext({"base": None, "fr": None}, char_tokenizer())
    first, lookahead = build_scorer("router", None, context), build_scorer("router_lookahead", None, context)
    assert first.classifier == lookahead.classifier == "classifier" and len(calls) == 1
    build_scorer("router", None, BaselineContext({"base": None}, char_tokenizer()))
    assert len(calls) == 2  # a new context trains its own


@pytest.mark.parametrize("method", ["ensemble:0.3", "bayes", "fixed_share:0.1", "router", "router_lookahead", "oracle",
                                    "oracle_token"])
def test_a_scorer_that_says_it_returns_log_probs_does(peaked, method, monkeypatch):
    """Scoring reads the NLL straight off such a scorer's output, without normalising it."""
    from superpose.compare import parse_baselines, router
    from superpose.core.metrics import token_nll_and_hits

    monkeypatch.setattr(router, "train_classifier", lambda context: (_FirstModel(), VOCAB))
    name, points = next(iter(parse_baselines([method]).items()))
    ids = torch.randint(1, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    refs = _refs(peaked, ids, domain="fr")
    scorer = _scorer(name, points[0], peaked)
    logits = scorer.logits(ids, torch.ones_like(ids), refs)
    if scorer.returns_log_probs:
        torch.testing.assert_close(torch.logsumexp(logits.double(), -1), torch.zeros(2, 10, dtype=torch.double),
                                   atol=1e-5, rtol=0)
        fast, slow = token_nll_and_hits(logits, ids, normalized=True), token_nll_and_hits(logits, ids)
        torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=0)
        assert torch.equal(fast[1], slow[1])


class _FirstModel:
    """A stand-in classifier that always picks the first model."""

    coef_ = torch.zeros(1, VOCAB).numpy()
    intercept_ = torch.full((1,), -1.0).numpy()
    classes_ = torch.arange(2).numpy()

    def predict(self, bags):
        return torch.zeros(bags.shape[0], dtype=torch.long).numpy()
