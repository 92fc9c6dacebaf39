import copy
import gc
import math
import resource
import weakref

import pytest
import torch
from helpers import char_tokenizer, paper_model, tiny_model, tiny_pair, write_domains
from transformers import AutoModelForCausalLM

from superpose.cli.commands import main
from superpose.compare import WEIGHT_MERGES, parse_baselines
from superpose.compare.hard_merge import export_hard_merge
from superpose.evaluation.evaluate import evaluate
from superpose.model.superposed import SuperposedModel


@pytest.fixture
def setup(tmp_path):
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(ae_layers=[1])).eval()
    en, fr = write_domains(tmp_path, repeat=3)
    return model, char_tokenizer(), {"base": str(en), "fr": str(fr)}


def _blocks(path, tokenizer, size: int) -> list[list[int]]:
    """The file's lines, each ending in EOS, cut into blocks of `size` tokens (the last one shorter)."""
    ids = []
    for line in open(path).read().splitlines():
        ids += tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def test_perplexity_and_accuracy_are_token_weighted_and_exclude_padding(setup):
    model, tokenizer, data = setup
    # block size 40 leaves a short last block, so batches carry padding
    result = evaluate(model, tokenizer, data, baselines=["oracle"], block_size=40, batch_size=3, progress=False)
    for domain, path in data.items():
        nll, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for block in _blocks(path, tokenizer, 40):  # one unpadded sequence at a time: an independent computation
                x = torch.tensor([block])
                logits = model(x).logits[0, :-1]
                target = x[0, 1:]
                nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
                correct += (logits.argmax(-1) == target).sum().item()
                count += target.numel()
        got = result["models"]["superposed"][domain]
        assert got["tokens"] == count
        assert got["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
        assert got["accuracy"] == pytest.approx(correct / count)


def _js_to_mixture(model, base, expert, path, tokenizer, size: int) -> float:
    """Mean per-token JSD(p_model || (p_base + p_expert) / 2) in float64, written out from the definition."""
    total, count = 0.0, 0
    with torch.no_grad():
        for block in _blocks(path, tokenizer, size):
            x = torch.tensor([block])
            p, b, e = (torch.softmax(m(x).logits[0, :-1].double(), -1) for m in (model, base, expert))  # (T-1, V)
            q = (b + e) / 2
            mid = (p + q) / 2
            js = 0.5 * (p * (p / mid).log()).sum(-1) + 0.5 * (q * (q / mid).log()).sum(-1)  # (T-1,)
            total, count = total + js.sum().item(), count + js.numel()
    return total / count


def test_linear_endpoints_reproduce_the_experts_and_oracle_picks_them(setup):
    model, tokenizer, data = setup
    result = evaluate(model, tokenizer, data, baselines=["linear:0,1", "oracle", "ensemble:0,0.5,1"], block_size=32,
                      agreement=True, progress=False)
    models = result["models"]
    for domain, path in data.items():
        for key in ("ppl", "accuracy", "tokens"):
            assert models["linear:0"][domain][key] == models["base"][domain][key]
            assert models["linear:1"][domain][key] == models["expert:fr"][domain][key]
            assert models["ensemble:0"][domain][key] == pytest.approx(models["base"][domain][key], rel=1e-5)
        assert models["linear:0"][domain]["js_base"] == pytest.approx(0.0, abs=1e-6)
        assert models["linear:1"][domain]["cos_fr"] == pytest.approx(1.0, abs=1e-5)
        # the 50/50 ensemble is the experts' mixture itself; the others' distance to it, from the definition
        assert models["ensemble:0.5"][domain]["js_mixture"] == pytest.approx(0.0, abs=1e-6)
        for name, scored in (("superposed", model), ("linear:0", model.base),
                             ("linear:1", next(iter(model.experts.values())))):
            expected = _js_to_mixture(scored, model.base, next(iter(model.experts.values())), path, tokenizer, 32)
            assert expected > 1e-4
            assert models[name][domain]["js_mixture"] == pytest.approx(expected, rel=1e-4), name
    assert models["oracle"]["base"]["ppl"] == models["base"]["base"]["ppl"]
    assert models["oracle"]["fr"]["ppl"] == models["expert:fr"]["fr"]["ppl"]


def _fit(model, path, tokenizer, steps: int = 40) -> None:
    """A few Adam steps on one file's text: enough for a 2-layer model to prefer that text."""
    x = torch.tensor([b for b in _blocks(path, tokenizer, 32) if len(b) == 32])  # (N, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train().requires_grad_(True)
    for _ in range(steps):
        loss = model(x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)


def test_sweep_best_point_is_chosen_on_selection_data_not_on_the_reported_data(tmp_path):
    tokenizer = char_tokenizer()
    en, fr = write_domains(tmp_path, repeat=3)
    base = tiny_model("gpt2")
    _fit(base, en, tokenizer)
    expert = copy.deepcopy(base)
    _fit(expert, fr, tokenizer)  # a French fine-tune of an English base
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(ae_layers=[])).eval()
    # reported: English text under both names (the base models it better); selection: French (the expert's)
    report = {"base": str(en), "fr": str(tmp_path / "en_copy.txt")}
    (tmp_path / "en_copy.txt").write_text(en.read_text())
    select = {"base": str(fr), "fr": str(tmp_path / "fr_copy.txt")}
    (tmp_path / "fr_copy.txt").write_text(fr.read_text())
    sweep = ["linear:0.1,0.5,0.9", "ensemble:0.1,0.9"]  # a weight merge (own pass) and a shared-pass baseline
    with pytest.raises(ValueError, match="must differ"):
        evaluate(model, tokenizer, report, baselines=sweep, select_data=report, progress=False)
    with pytest.raises(ValueError, match="must differ"):  # the same file under another name is still the same data
        evaluate(model, tokenizer, report, baselines=sweep, select_data={"other": str(en)}, progress=False)

    def geomean_ppl(models: dict, method: str) -> dict[str, float]:
        return {name: math.exp(sum(math.log(m["ppl"]) for m in per_domain.values()) / len(per_domain))
                for name, per_domain in models.items() if name.startswith(f"{method}:")}

    result = evaluate(model, tokenizer, report, baselines=sweep, select_data=select, block_size=32, every_point=True,
                      progress=False)
    as_reported = evaluate(model, tokenizer, select, baselines=sweep, block_size=32, progress=False)  # no selection
    for method, low, high in (("linear", "linear:0.1", "linear:0.9"), ("ensemble", "ensemble:0.1", "ensemble:0.9")):
        on_report, on_select = geomean_ppl(result["models"], method), geomean_ppl(as_reported["models"], method)
        # the two data sets really disagree, so choosing on the reported data would show
        assert min(on_report, key=on_report.get) == low
        assert min(on_select, key=on_select.get) == high
        assert result["best"][method] == high
        assert result["selection_geomean_ppl"][method] == pytest.approx(on_select, rel=1e-6)
    # by default a weight merge's sweep reports its chosen point alone (the same numbers), a shared one every point
    chosen_only = evaluate(model, tokenizer, report, baselines=sweep, select_data=select, block_size=32,
                           progress=False)
    assert [n for n in chosen_only["models"] if n.startswith("linear:")] == ["linear:0.9"]
    assert chosen_only["models"]["linear:0.9"] == result["models"]["linear:0.9"]
    assert chosen_only["best"] == result["best"]
    for method, values in result["selection_geomean_ppl"].items():
        assert chosen_only["selection_geomean_ppl"][method] == pytest.approx(values)
    assert {n for n in chosen_only["models"] if n.startswith("ensemble:")} == {"ensemble:0.1", "ensemble:0.9"}


def test_weight_merges_are_built_scored_and_freed_one_at_a_time(setup, monkeypatch):
    """The default set has 11 weight merges, each as large as the base: at 7B they cannot all be alive at once."""
    model, tokenizer, data = setup
    cls = type(model.base)
    forward = cls.forward
    merged_alive = weakref.WeakSet()  # every model of the base's class that ran, other than the base and expert
    most_alive = []

    def counting_forward(self, *args, **kwargs):
        if self is not model.base and self is not next(iter(model.experts.values())):
            merged_alive.add(self)
            if len(merged_alive) > 1:
                gc.collect()  # count only what something still holds
            most_alive.append(len(merged_alive))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counting_forward)
    result = evaluate(model, tokenizer, data, train_files=data, block_size=32, progress=False)  # the default set
    merges = [name for name in result["models"] if name.partition(":")[0] in WEIGHT_MERGES]
    assert len(merges) == 11 and not result["skipped_baselines"]
    assert max(most_alive) == 1
    gc.collect()
    assert len(merged_alive) == 0  # and nothing outlives evaluate()
    assert 0 < result["peak_rss_mb"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB


def test_a_model_passed_in_cannot_take_a_scored_model_s_name(setup):
    model, tokenizer, data = setup
    for taken in ("base", "linear:0.5", "superposed"):  # it would replace that model's numbers
        with pytest.raises(ValueError, match="taken"):
            evaluate(model, tokenizer, data, baselines=["linear:0.5"],
                     extra_models={taken: next(iter(model.experts.values()))}, progress=False)
    with pytest.raises(ValueError, match="taken"):
        evaluate(model, tokenizer, data, baselines=[], extra_models={"x": next(iter(model.experts.values()))},
                 other_runs={"x": model}, progress=False)


def test_routers_learn_the_domains_from_training_files(setup):
    model, tokenizer, data = setup
    result = evaluate(model, tokenizer, data, baselines=["router", "router_lookahead"], train_files=data,
                      block_size=32, progress=False)
    models = result["models"]
    # upper-case French and lower-case English are easy to tell apart: reading the whole sequence, the router
    # matches the oracle; deciding from each prefix, it can only err on the first token(s) of a block
    assert models["router_lookahead"]["base"]["ppl"] == pytest.approx(models["base"]["base"]["ppl"])
    assert models["router_lookahead"]["fr"]["ppl"] == pytest.approx(models["expert:fr"]["fr"]["ppl"])
    for domain, own in (("base", "base"), ("fr", "expert:fr")):
        assert models["router"][domain]["ppl"] == pytest.approx(models[own][domain]["ppl"], rel=0.02)
    assert "router_lookahead" in result["reads_answer"] and "router" not in result["reads_answer"]


def test_baseline_parsing():
    assert parse_baselines(["linear:0.1,0.5", "linear:0.5", "router"]) == {"linear": [0.1, 0.5], "router": [None]}
    assert parse_baselines(["ties:0.5,0.5@0.3", "fixed_share:0.02"]) == {"ties": [0.5, (0.5, 0.3)],
                                                                        "fixed_share": [0.02]}
    with pytest.raises(ValueError, match="density@λ"):
        parse_baselines(["dare:0.5@x"])
    with pytest.raises(ValueError, match="must be numbers"):
        parse_baselines(["linear:0.5@1"])
    with pytest.raises(ValueError, match="unknown baseline"):
        parse_baselines(["average:0.5"])
    with pytest.raises(ValueError, match="no parameter"):
        parse_baselines(["oracle:1"])
    assert "linear" in parse_baselines(None)


def test_export_loads_with_plain_transformers_and_alpha_zero_is_the_base(setup, tmp_path):
    model, tokenizer, _ = setup
    plain = SuperposedModel.from_models(model.base, next(iter(model.experts.values())),
                                        paper_model(ae_layers=[], embed_blend="base"))
    plain.blend.spline.set_constant(0.0)
    export_hard_merge(plain, tmp_path / "merged", tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(1, 60, (2, 12))
    with torch.no_grad():
        # so a wrongly blended final norm would show
        next(iter(model.experts.values())).transformer.ln_f.weight.add_(1.0)
    mixed = SuperposedModel.from_models(model.base, next(iter(model.experts.values())),
                                        paper_model(ae_layers=[], head="base"))
    export_hard_merge(mixed, tmp_path / "mixed")  # tied head: the head follows the embeddings, not ln_f
    mixed_sd = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed").state_dict()
    torch.testing.assert_close(mixed_sd["transformer.ln_f.weight"], model.base.state_dict()["transformer.ln_f.weight"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.base(ids).logits, atol=1e-5, rtol=0)
    one = SuperposedModel.from_models(model.base, next(iter(model.experts.values())),
                                      paper_model(ae_layers=[], head="first_expert"))
    one.blend.spline.set_constant(1.0)
    export_hard_merge(one, tmp_path / "expert_like")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "expert_like").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, next(iter(model.experts.values()))(ids).logits,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_export_merges_each_layer_with_its_own_alpha(arch, tmp_path):
    base, expert = tiny_pair(arch, layers=4)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[], embed_blend="base", head="base"))
    with torch.no_grad():
        model.blend.spline.control.copy_(
            torch.linspace(0.05, 0.95, model.blend.spline.control.numel()))  # alpha rises with depth
    alphas = model.alphas().tolist()  # (4,) the served model's own per-layer alphas
    assert all(a < b - 0.1 for a, b in zip(alphas, alphas[1:]))  # distinct: a reversed list would show
    export_hard_merge(model, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    base_sd, expert_sd = base.state_dict(), expert.state_dict()
    layer_prefix = {"gpt2": "transformer.h.{}.", "llama": "model.layers.{}."}[arch]
    in_layers = set()
    for layer, a in enumerate(alphas):
        keys = [k for k in base_sd if k.startswith(layer_prefix.format(layer))]
        assert keys
        for key in keys:
            torch.testing.assert_close(merged[key], (1 - a) * base_sd[key] + a * expert_sd[key], msg=key)
        in_layers.update(keys)
    for key in base_sd.keys() - in_layers:  # embeddings, final norm, head: the base's (embed_blend, head = base)
        torch.testing.assert_close(merged[key], base_sd[key], rtol=0, atol=0, msg=key)


def test_cli_eval_and_export(tmp_path, capsys):
    from helpers import save_pair
    base, other = save_pair(tmp_path)
    en, fr = write_domains(tmp_path, repeat=3)
    assert main(["train", "--base", str(base), "--expert", f"fr={other}", "--train", f"base={en}", "--train",
                 f"fr={fr}", "--out", str(tmp_path / "run"), "--batch-size", "4", "--block-size", "16",
                 "--max-steps", "2"]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    out_json = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run"), "--data", f"base={en}", "--data", f"fr={fr}",
                 "--baselines", "linear:0.5", "--baselines", "router", "--model", f"hard_merge={tmp_path / 'merged'}",
                 "--json", str(out_json), "--block-size", "16"]) == 0
    import json
    result = json.loads(out_json.read_text())
    assert set(result["models"]) == {"superposed", "base", "expert:fr", "linear:0.5", "router", "hard_merge"}
    assert result["domains"] == ["base", "fr"]
    assert "superposed" in capsys.readouterr().out
    capsys.readouterr()
    # a name that is no model's is an unlabelled set: every model scores it, nothing needs its language
    assert main(["eval", str(tmp_path / "run"), "--data", f"mixed={en}", "--baselines", "bayes",
                 "--baselines", "oracle", "--block-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "unlabelled sets: mixed" in out and "oracle †" in out


def test_selection_data_is_used_only_for_sweeps_and_never_the_reported_files(tmp_path):
    from superpose.evaluation.evaluate import selection_data

    report, select = {"base": str(tmp_path / "a.txt")}, {"base": str(tmp_path / "b.txt")}
    assert selection_data({"linear": [0.1, 0.5]}, report, select) == select
    assert selection_data({"linear": [0.5], "bayes": [None]}, report, select) is None  # nothing to choose
    assert selection_data({"linear": [0.1, 0.5]}, report, None) is None
    with pytest.raises(ValueError, match="must differ"):
        selection_data({"linear": [0.1, 0.5]}, report, {"other": str(tmp_path / "." / "a.txt")})


def test_the_plan_shares_one_pass_holds_merges_apart_and_skips_what_cannot_be_built(setup):
    from superpose.compare import BaselineContext
    from superpose.evaluation.evaluate import add_models, plan_scorers, stack_models

    model, tokenizer, _ = setup
    context = BaselineContext(stack_models(model), tokenizer)  # no training files: the router cannot be built
    sweeps = parse_baselines(["linear:0.1,0.5", "bayes", "router"])
    with pytest.warns(UserWarning, match="router skipped"):
        plan = plan_scorers(model, sweeps, context, strict=False)
    assert plan.order == ["superposed", "base", "expert:fr", "linear:0.1", "linear:0.5", "bayes", "router"]
    assert list(plan.shared) == ["superposed", "base", "expert:fr", "bayes"]
    assert plan.merges == [("linear", 0.1), ("linear", 0.5)] and list(plan.skipped) == ["router"]
    with pytest.raises(ValueError, match="training file"):
        plan_scorers(model, sweeps, context, strict=True)  # asked for by name: an error, not a skip
    add_models(plan, None, {"hard_merge": model.base})
    assert plan.order[-1] == "hard_merge" and "hard_merge" in plan.shared
    with pytest.raises(ValueError, match="taken"):
        add_models(plan, {"bayes": model}, None)


def test_best_point_and_throughput_steps():
    from superpose.evaluation.evaluate import choose_best, throughput

    chosen = {"linear:0.1": {"a": {"ppl": 4.0}, "b": {"ppl": 9.0}},
              "linear:0.5": {"a": {"ppl": 5.0}, "b": {"ppl": 5.0}},
              "bayes": {"a": {"ppl": 1.0}, "b": {"ppl": 1.0}}}
    best, selection = choose_best({"linear": [0.1, 0.5], "bayes": [None]}, chosen)
    assert best == {"linear": "linear:0.5"}  # geometric means 6 and 5; an unswept method has no best point
    assert selection["linear"] == pytest.approx({"linear:0.1": 6.0, "linear:0.5": 5.0})
    results = {"m": {"a": {"tokens": 30, "seconds": 1.0}, "b": {"tokens": 10, "seconds": 1.0}}}
    assert throughput(results) == {"m": 20.0} and "seconds" not in results["m"]["a"]


def test_agreement_is_measured_only_on_request_and_then_a_merge_reruns_the_stacks(setup, monkeypatch):
    model, tokenizer, data = setup
    calls = []
    forward = type(model.base).forward

    def counting(self, *args, **kwargs):
        if self is model.base:
            calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model.base), "forward", counting)
    runs = {}
    for agreement in (False, True):
        calls.clear()
        result = evaluate(model, tokenizer, data, baselines=["linear:0.5"], block_size=32, agreement=agreement,
                          progress=False)
        runs[agreement] = (len(calls), result["models"]["linear:0.5"]["base"], result["models"]["superposed"]["fr"])
    plain_calls, plain_merge, plain_superposed = runs[False]
    agreed_calls, agreed_merge, agreed_superposed = runs[True]
    assert not any(key.startswith(("js_", "cos_")) for key in {**plain_merge, **plain_superposed})
    assert {"js_base", "cos_fr", "js_mixture"} <= set(agreed_merge) and "js_mixture" in agreed_superposed
    assert agreed_calls == 2 * plain_calls  # the shared pass runs the base once per batch; the merge only if asked
    assert plain_merge["ppl"] == agreed_merge["ppl"]


def test_each_model_is_recorded_in_its_report_group(setup):
    model, tokenizer, data = setup
    result = evaluate(model, tokenizer, data, baselines=["bayes", "oracle", "linear:0.5"], extra_models={
        "hard": copy.deepcopy(model.base)}, block_size=32, progress=False)
    assert result["groups"] == {"superposed": "superposed", "base": "single stacks", "expert:fr": "single stacks",
                                "bayes": "mixtures and routers", "oracle": "bounds (read the answer)",
                                "linear:0.5": "weight merges", "hard": "models passed in"}
