"""End-to-end analyses on a tiny saved run: every figure is a valid PNG, every number is in analysis.json,
the HTML report is self-contained, and the CLI wrappers pass settings through and fail clearly."""
import argparse
import base64
import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from helpers import ENGLISH, FRENCH, char_tokenizer, paper_model, tiny_model, tiny_pair, write_domains

from superpose.cli.analysis import add_parsers
from superpose.data.text import DataError
from superpose.model.superposed import SuperposedModel
from superpose.report.analysis import stats
from superpose.report.analysis.run import ANALYSIS_JSON, FIGURES, GATES_FIGURE, STACK_WEIGHTS_FIGURE, analyze
from superpose.report.run_report import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = dict(samples=4, block_size=16, generations=2, max_new_tokens=8, progress=False)
STAT_KEYS = {"settings", "tokens", "sequences", "polysemantic_percent", "sparsity_percent", "neuron_diversity",
             "mean_activation", "l2_distances", "trajectories", "alpha", "generation_diversity", "generations",
             "figures", "seconds", "gates"}
MODELS = {"superposed", "base", "expert"}


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, f"{path.name} missing or empty"
    assert path.read_bytes().startswith(PNG_SIGNATURE), f"{path.name} is not a PNG"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A saved 2-layer GPT-2 run with AEs after both layers, and the two domain files."""
    tmp = tmp_path_factory.mktemp("analysis")
    base, expert = tiny_pair("gpt2")
    for name, model in (("base", base), ("expert", expert)):
        model.save_pretrained(tmp / name)
        char_tokenizer().save_pretrained(tmp / name)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[0, 1]), str(tmp / "base"), "fr",
                                        str(tmp / "expert"))
    model.save_pretrained(tmp / "run")
    char_tokenizer().save_pretrained(tmp / "run")
    en, fr = write_domains(tmp)
    return {"dir": tmp / "run", "data": {"base": str(en), "fr": str(fr)}, "tmp": tmp}


@pytest.fixture(scope="module")
def analysis(run):
    out = run["tmp"] / "pca"
    return out, analyze(run["dir"], run["data"], out, method="pca", **SMALL)


def test_analyze_writes_every_figure_and_statistic(analysis):
    out, result = analysis
    layers = result["settings"]["layers"]
    assert layers == [0, 1]  # default: first AE layer (0) and the middle layer (2 // 2)
    for name in [*FIGURES, *(f"embedding_layer{layer}.png" for layer in layers)]:
        _assert_png(out / name)
    saved = json.loads((out / ANALYSIS_JSON).read_text(encoding="utf-8"))
    assert STAT_KEYS <= set(saved)
    assert saved["settings"]["seed"] == 0 and saved["settings"]["method"] == "pca"
    for key in ("polysemantic_percent", "sparsity_percent", "neuron_diversity"):
        assert set(saved[key]) == {"0", "1"} and all(set(v) == MODELS for v in saved[key].values())
        assert all(0 <= x <= 100 for v in saved[key].values() for x in v.values() if key != "neuron_diversity")
    for domain in ("base", "fr"):
        assert all(len(v) == 2 for v in saved["mean_activation"][domain].values())
        assert set(saved["l2_distances"][domain]) == {"base–superposed", "expert–superposed", "base–expert"}
        assert all(len(p) == 2 and len(p[0]) == 2 for p in saved["trajectories"][domain].values())
        assert set(saved["generation_diversity"][domain]) == MODELS
        assert all(len(saved["generations"][domain][m]) == 2 for m in MODELS)
        assert len(saved["generations"][domain]["prompts"]) == 2
    assert len(saved["alpha"]) == 2
    assert saved["tokens"]["base"] > 0 and saved["sequences"]["fr"] <= 4
    assert GATES_FIGURE in saved["figures"]


def test_gate_heat_map_shows_a_code_switched_line(analysis):
    out, result = analysis
    gates = result["gates"]
    share = (SMALL["block_size"] - 2) // 2  # each domain's part gets an equal share of block_size, less the spaces
    assert gates["text"] == f"{ENGLISH[0][:share]} {FRENCH[0][:share]}"  # first sentences, base first
    assert gates["tokens"] == list(gates["text"]) and gates["stacks"] == ["base", "fr"] and gates["gate"] == "static"
    weights = np.asarray(gates["weights"])  # (L, T, M)
    assert weights.shape == (2, len(gates["text"]), 2)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert gates["boundaries"] == [share]
    _assert_png(out / GATES_FIGURE)


def test_analyze_tsne_single_layer_without_generation(run):
    out = run["tmp"] / "tsne"
    result = analyze(run["dir"], run["data"], out, layers=[1], method="tsne", trajectory_layers=[0, 1],
                     **{**SMALL, "generations": 0})
    _assert_png(out / "embedding_layer1.png")
    assert not (out / "embedding_layer0.png").exists()
    assert not (out / "generation_diversity.png").exists() and result["generation_diversity"] == {}


def test_analyze_rejects_unknown_domain_and_bad_layers(run):
    with pytest.raises(DataError, match="unknown domain.*'de'"):
        analyze(run["dir"], {"base": run["data"]["base"], "de": run["data"]["fr"]}, run["tmp"] / "x", **SMALL)
    with pytest.raises(DataError, match="both domains"):
        analyze(run["dir"], {"base": run["data"]["base"]}, run["tmp"] / "x", **SMALL)
    with pytest.raises(ValueError, match="do not exist"):
        analyze(run["dir"], run["data"], run["tmp"] / "x", layers=[5], **SMALL)


def test_report_is_self_contained(run, analysis):
    out, _ = analysis
    eval_path = run["tmp"] / "eval.json"
    eval_path.write_text(json.dumps({"domains": ["base", "fr"], "models": {
        "base": {"base": {"ppl": 10.0, "accuracy": 0.3}, "fr": {"ppl": 80.0, "accuracy": 0.1}},
        "superposed": {"base": {"ppl": 11.0, "accuracy": 0.29}, "fr": {"ppl": 12.0, "accuracy": 0.28}}}}))
    page = build_report(run["dir"], run["tmp"] / "report", str(eval_path), str(out), title="Tiny run")
    text = page.read_text(encoding="utf-8")
    assert page.name == "index.html"
    assert text.count('<img src="data:image/png;base64,') == len(FIGURES) + 2
    assert "Superposed points should sit on the base&#x27;s cluster" in text
    assert "Evaluation: perplexity and accuracy" in text and "AE layers" in text
    assert "Polysemantic neurons" in text and "Generated samples" in text
    assert "http://" not in text and "https://" not in text
    assert "Gate weights on a code-switched line" in text and "first sentence of each domain" in text
    assert base64.b64encode((out / GATES_FIGURE).read_bytes()).decode("ascii") in text


@pytest.fixture(scope="module")
def three_stacks(run):
    """A saved 3-stack run (base + fr + de) with a token gate, and a third domain file."""
    tmp = run["tmp"]
    de_model = tiny_model("gpt2", seed=2)
    de_model.save_pretrained(tmp / "de")
    char_tokenizer().save_pretrained(tmp / "de")
    loaded = {n: SuperposedModel.from_pretrained(run["dir"]).stack_models[i] for i, n in enumerate(["base", "fr"])}
    model = SuperposedModel.from_models(loaded["base"], {"fr": loaded["fr"], "de": de_model},
                                        paper_model(ae_layers=[0], gate="token"), str(tmp / "base"),
                                        expert_paths={"fr": str(tmp / "expert"), "de": str(tmp / "de")})
    model.save_pretrained(tmp / "run3")
    char_tokenizer().save_pretrained(tmp / "run3")
    de = tmp / "de.txt"
    de.write_text("\n".join(["ICH BIN. DAS IST GUT"] + FRENCH[::-1] * 4), encoding="utf-8")
    return {"dir": tmp / "run3", "data": {**run["data"], "de": str(de)}, "tmp": tmp}


def test_analyze_and_report_a_three_stack_run(three_stacks):
    out = three_stacks["tmp"] / "three"
    result = analyze(three_stacks["dir"], three_stacks["data"], out, method="pca", **{**SMALL, "block_size": 32})
    models = {"superposed", "base", "fr", "de"}
    assert result["settings"]["domains"] == ["base", "fr", "de"] and set(result["settings"]["models"]) == models
    assert "alpha" not in result and np.asarray(result["static_weights"]).shape == (2, 3)
    for key in ("polysemantic_percent", "sparsity_percent", "neuron_diversity"):
        assert all(set(v) == models for v in result[key].values())
    for domain in ("base", "fr", "de"):
        assert set(result["l2_distances"][domain]) == {"base–superposed", "fr–superposed", "de–superposed",
                                                       "base–fr", "base–de"}
        assert set(result["generation_diversity"][domain]) == models
    gates = result["gates"]
    share = (32 - 3) // 3  # 9 tokens (characters) per domain
    assert gates["text"] == "the cat s LE CHAT E ICH BIN."  # de: its whole first sentence, shorter than its share
    assert gates["boundaries"] == [share, 2 * share + 1] and gates["stacks"] == ["base", "fr", "de"]
    assert np.asarray(gates["weights"]).shape == (2, len(gates["text"]), 3)
    for name in [n for n in FIGURES if n != "alpha.png"] + [STACK_WEIGHTS_FIGURE]:
        _assert_png(out / name)
    assert not (out / "alpha.png").exists()
    text = build_report(three_stacks["dir"], three_stacks["tmp"] / "report3", analysis_dir=str(out)).read_text("utf-8")
    assert "base + fr + de" in text and "Learned static blend weight of each stack" in text
    assert text.count('<img src="data:image/png;base64,') == len(FIGURES) + 2
    assert base64.b64encode((out / GATES_FIGURE).read_bytes()).decode("ascii") in text


def test_three_stack_run_needs_every_domain(three_stacks):
    data = three_stacks["data"]
    with pytest.raises(DataError, match="all 3 domains.*'de'"):
        analyze(three_stacks["dir"], {"base": data["base"], "fr": data["fr"]}, three_stacks["tmp"] / "x", **SMALL)


def test_polysemantic_across_two_domains_is_the_pairwise_number():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(50, 16)), rng.normal(size=(40, 16)) * 1.02, rng.normal(size=(30, 16))
    for threshold in (0.05, 0.5, 2.0):
        assert stats.polysemantic_percent_across([a, b], threshold) == stats.polysemantic_percent(a, b, threshold)
    assert stats.polysemantic_percent_across([a, b, c], 0.5) <= stats.polysemantic_percent(a, b, 0.5)
    with pytest.raises(ValueError, match="two domains"):
        stats.polysemantic_percent_across([a], 0.5)


def test_report_needs_something_to_show(run):
    with pytest.raises(ValueError, match="nothing to report"):
        build_report(run["dir"], run["tmp"] / "r")
    with pytest.raises(FileNotFoundError):
        build_report(run["dir"], run["tmp"] / "r", analysis_dir=str(run["tmp"] / "missing"))
    only_eval = run["tmp"] / "only-eval.json"
    only_eval.write_text(json.dumps({"domains": ["fr"], "models": {"base": {"fr": {"ppl": 3.0}}}}))
    text = build_report(run["dir"], run["tmp"] / "r", str(only_eval)).read_text(encoding="utf-8")
    assert "<img" not in text and "Settings" in text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superpose")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help():
    for name, sub in _subparsers(_parser()).items():
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help text"


def test_cli_report_with_data_analyses_first(run):
    out = run["tmp"] / "cli-report"
    args = _parser().parse_args(["report", str(run["dir"]), "--out", str(out), "--method", "pca", "--samples", "2",
                                 "--block-size", "16", "--generations", "1", "--max-new-tokens", "4",
                                 "--layers", "1", "--seed", "3",
                                 "--data", f"base={run['data']['base']}", "--data", f"fr={run['data']['fr']}"])
    args.func(args)
    saved = json.loads((out / "analysis" / ANALYSIS_JSON).read_text(encoding="utf-8"))
    assert saved["settings"]["layers"] == [1] and saved["settings"]["seed"] == 3
    assert (out / "index.html").is_file()


def test_cli_report_draws_a_heat_map_of_each_gate_text(run):
    docs = run["tmp"] / "docs.jsonl"
    docs.write_text(json.dumps({"text": "the cat LE CHAT EST la"}) + "\n", encoding="utf-8")
    out = run["tmp"] / "cli-report-docs"
    args = _parser().parse_args(["report", str(run["dir"]), "--out", str(out), "--method", "pca", "--samples", "2",
                                 "--block-size", "16", "--generations", "0", "--layers", "1",
                                 "--data", f"base={run['data']['base']}", "--data", f"fr={run['data']['fr']}",
                                 "--gate-text", f"docs={docs}"])
    args.func(args)
    saved = json.loads((out / "analysis" / ANALYSIS_JSON).read_text(encoding="utf-8"))
    gates = saved["text_gates"]["docs"]
    assert gates["text"] == "the cat LE CHAT EST la" and len(gates["tokens"]) == len(gates["text"])
    assert np.asarray(gates["weights"]).shape == (2, len(gates["text"]), 2)
    _assert_png(out / "analysis" / "gates_docs.png")
    assert "Gate weights on docs" in (out / "index.html").read_text(encoding="utf-8")


def test_cli_unknown_domain_is_a_clear_error(run):
    args = _parser().parse_args(["analyze", str(run["dir"]), "--out", str(run["tmp"] / "bad"),
                                 "--data", f"base={run['data']['base']}", "--data", f"de={run['data']['fr']}"])
    with pytest.raises(DataError, match="unknown domain"):
        args.func(args)
    args = _parser().parse_args(["analyze", str(run["dir"]), "--out", str(run["tmp"] / "bad"), "--layers", "a,b",
                                 "--data", f"base={run['data']['base']}"])
    with pytest.raises(ValueError, match="--layers"):
        args.func(args)


def _main_has_analysis_commands() -> bool:
    from superpose.cli import commands as cli

    return {"analyze", "report"} <= set(_subparsers(cli.build_parser()))


def test_main_cli_analyze(run, capsys):
    if not _main_has_analysis_commands():
        pytest.skip("superpose.cli.commands does not wire cli_analysis.add_parsers yet")
    from superpose.cli.commands import main

    out = run["tmp"] / "main-cli"
    assert main(["analyze", str(run["dir"]), "--out", str(out), "--method", "pca", "--samples", "2",
                 "--block-size", "16", "--generations", "1", "--max-new-tokens", "4",
                 "--data", f"base={run['data']['base']}", "--data", f"fr={run['data']['fr']}"]) == 0
    assert (out / ANALYSIS_JSON).is_file()
    half = run["tmp"] / "main-cli-bf16"  # frozen stacks loaded in bfloat16
    assert main(["analyze", str(run["dir"]), "--out", str(half), "--method", "pca", "--samples", "2",
                 "--block-size", "16", "--generations", "1", "--max-new-tokens", "4", "--dtype", "bfloat16",
                 "--data", f"base={run['data']['base']}", "--data", f"fr={run['data']['fr']}"]) == 0
    assert (half / ANALYSIS_JSON).is_file()
    assert main(["analyze", str(run["dir"]), "--out", str(out), "--data", f"base={run['data']['base']}",
                 "--data", f"xx={run['data']['fr']}"]) == 2
    assert "unknown domain" in capsys.readouterr().err
