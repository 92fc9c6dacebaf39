import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from superpose.baselines import parse_baselines
from superpose.cli import main
from superpose.evaluation import evaluate
from superpose.export import export_hard_merge
from superpose.modeling import SuperposedModel
from superpose.settings import ModelSettings

from helpers import char_tokenizer, tiny_pair, write_domains


@pytest.fixture
def setup(tmp_path):
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, expert, ModelSettings(ae_layers=[1]), expert_name="fr").eval()
    en, fr = write_domains(tmp_path, repeat=3)
    return model, char_tokenizer(), {"base": str(en), "fr": str(fr)}


def test_perplexity_and_accuracy_are_token_weighted_and_exclude_padding(setup):
    model, tokenizer, data = setup
    # block size 40 leaves a short last block, so batches carry padding
    result = evaluate(model, tokenizer, data, baselines=["oracle"], block_size=40, batch_size=3, progress=False)
    for domain, path in data.items():
        ids = []
        for line in open(path).read().splitlines():
            ids += tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]
        blocks = [ids[i : i + 40] for i in range(0, len(ids), 40)]
        nll, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for block in blocks:  # one unpadded sequence at a time: an independent computation
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


def test_linear_endpoints_reproduce_the_experts_and_oracle_picks_them(setup):
    model, tokenizer, data = setup
    result = evaluate(model, tokenizer, data, baselines=["linear:0,1", "oracle", "ensemble:0,1"], block_size=32,
                      progress=False)
    models = result["models"]
    for domain in data:
        for key in ("ppl", "accuracy", "tokens"):
            assert models["linear:0"][domain][key] == models["base"][domain][key]
            assert models["linear:1"][domain][key] == models["expert:fr"][domain][key]
            assert models["ensemble:0"][domain][key] == pytest.approx(models["base"][domain][key], rel=1e-5)
        assert models["linear:0"][domain]["js_base"] == pytest.approx(0.0, abs=1e-6)
        assert models["linear:1"][domain]["cos_fr"] == pytest.approx(1.0, abs=1e-5)
        assert 0 <= models["superposed"][domain]["js_mixture"] <= math.log(2)
    assert models["oracle"]["base"]["ppl"] == models["base"]["base"]["ppl"]
    assert models["oracle"]["fr"]["ppl"] == models["expert:fr"]["fr"]["ppl"]


def test_sweep_best_point_is_chosen_on_selection_data_only(setup, tmp_path):
    model, tokenizer, data = setup
    with pytest.raises(ValueError, match="must differ"):
        evaluate(model, tokenizer, data, baselines=["linear:0.2,0.8"], select_data=data, progress=False)
    sel_en, sel_fr = tmp_path / "sel_en.txt", tmp_path / "sel_fr.txt"
    sel_en.write_text(open(data["base"]).read())
    sel_fr.write_text(open(data["fr"]).read())
    result = evaluate(model, tokenizer, data, baselines=["linear:0.2,0.8"],
                      select_data={"base": str(sel_en), "fr": str(sel_fr)}, progress=False)
    scores = result["selection_geomean_ppl"]["linear"]
    assert result["best"]["linear"] == min(scores, key=scores.get)


def test_router_learns_the_domains_from_training_files(setup):
    model, tokenizer, data = setup
    result = evaluate(model, tokenizer, data, baselines=["router"], train_files=data, block_size=32, progress=False)
    models = result["models"]
    # upper-case French and lower-case English are easy to tell apart: the router matches the oracle
    assert models["router"]["base"]["ppl"] == pytest.approx(models["base"]["base"]["ppl"])
    assert models["router"]["fr"]["ppl"] == pytest.approx(models["expert:fr"]["fr"]["ppl"])


def test_baseline_parsing():
    assert parse_baselines(["linear:0.1,0.5", "linear:0.5", "router"]) == {"linear": [0.1, 0.5], "router": [None]}
    with pytest.raises(ValueError, match="unknown baseline"):
        parse_baselines(["average:0.5"])
    with pytest.raises(ValueError, match="no parameter"):
        parse_baselines(["oracle:1"])
    assert "linear" in parse_baselines(None)


def test_export_loads_with_plain_transformers_and_alpha_zero_is_the_base(setup, tmp_path):
    model, tokenizer, _ = setup
    plain = SuperposedModel.from_models(model.base, model.expert, ModelSettings(ae_layers=[], embed_blend="base"))
    plain.alpha.set_constant(0.0)
    export_hard_merge(plain, tmp_path / "merged", tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(1, 60, (2, 12))
    with torch.no_grad():
        model.expert.transformer.ln_f.weight.add_(1.0)  # so a wrongly blended final norm would show
    mixed = SuperposedModel.from_models(model.base, model.expert, ModelSettings(ae_layers=[], head="base"))
    export_hard_merge(mixed, tmp_path / "mixed")  # tied head: the head follows the embeddings, not ln_f
    mixed_sd = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed").state_dict()
    torch.testing.assert_close(mixed_sd["transformer.ln_f.weight"], model.base.state_dict()["transformer.ln_f.weight"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.base(ids).logits, atol=1e-5, rtol=0)
    one = SuperposedModel.from_models(model.base, model.expert, ModelSettings(ae_layers=[], head="expert"))
    one.alpha.set_constant(1.0)
    export_hard_merge(one, tmp_path / "expert_like")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "expert_like").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.expert(ids).logits, atol=1e-5, rtol=0)


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
    assert main(["eval", str(tmp_path / "run"), "--data", f"german={en}"]) == 2
