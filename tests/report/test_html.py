"""Plots write valid PNGs and the HTML report is self-contained and escaped."""
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from superpose.report.analysis import plots
from superpose.report.html import STAR, ReportSection, detail_tables_from_eval, table_from_eval, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = [0, 1, 2, 3]


def _assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10


def _by_model(shape, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=shape) for m in ("superposed", "base", "expert")}


def test_plot_embedding_panels(tmp_path):
    points = {"base": _by_model((20, 2)), "fr": _by_model((20, 2), 1)}
    out = plots.plot_embedding_panels(points, tmp_path / "emb.png", "t-SNE of hidden states")
    _assert_png(out)


def test_plot_trajectories(tmp_path):
    traj = {"base": _by_model((4, 2)), "fr": _by_model((4, 2), 1)}
    _assert_png(plots.plot_trajectories(traj, LAYERS, tmp_path / "traj.png"))
    with pytest.raises(ValueError, match="layers"):
        plots.plot_trajectories(traj, [0, 1], tmp_path / "bad.png")


def test_plot_layer_distances(tmp_path):
    dist = {d: {"base–superposed": [0.1, 0.2, 0.3, 0.4], "expert–superposed": [1, 2, 3, 4],
                "base–expert": [2, 2, 2, 2]} for d in ("base", "fr")}
    _assert_png(plots.plot_layer_distances(dist, LAYERS, tmp_path / "dist.png"))


def test_plot_alpha_curve_and_heatmap(tmp_path):
    _assert_png(plots.plot_alpha(np.linspace(0, 1, 4), tmp_path / "a1.png"))
    _assert_png(plots.plot_alpha(np.random.default_rng(0).uniform(size=(4, 16)), tmp_path / "a2.png"))
    with pytest.raises(ValueError):
        plots.plot_alpha(np.zeros((2, 2, 2)), tmp_path / "a3.png")


def test_plot_grouped_bars(tmp_path):
    values = {"base": {"superposed": 40.0, "base": 38.0, "expert": 90.0},
              "fr": {"superposed": 30.0, "base": 200.0, "expert": 28.0}}
    _assert_png(plots.plot_grouped_bars(values, tmp_path / "ppl.png", "Perplexity", "ppl", log=True))
    _assert_png(plots.plot_grouped_bars({"fr": {"a": 1.0, "b": float("nan")}}, tmp_path / "gap.png", "t", "y"))


def test_plot_stack_weights(tmp_path):
    weights = np.random.default_rng(0).dirichlet(np.ones(3), size=4)  # (L, M)
    _assert_png(plots.plot_stack_weights(weights, ["base", "fr", "de"], tmp_path / "w1.png"))
    _assert_png(plots.plot_stack_weights(np.repeat(weights[..., None], 8, -1), ["base", "fr", "de"],
                                         tmp_path / "w2.png"))
    with pytest.raises(ValueError, match="stacks"):
        plots.plot_stack_weights(weights, ["base", "fr"], tmp_path / "w3.png")


def test_plot_gate_heatmap(tmp_path):
    tokens = ["␣the", "$x^$", "\\n", "LE"]  # '$' must not start mathtext
    weights = np.random.default_rng(0).dirichlet(np.ones(3), size=(4, len(tokens)))  # (L, T, M)
    out = plots.plot_gate_heatmap(weights, tokens, ["base", "fr", "de"], tmp_path / "gates.png", boundaries=[3])
    _assert_png(out)
    with pytest.raises(ValueError, match="tokens"):
        plots.plot_gate_heatmap(weights, tokens[:2], ["base", "fr", "de"], tmp_path / "bad.png")


EVAL = {
    "domains": ["base", "fr"],
    "models": {
        "superposed": {"base": {"ppl": 41.2, "accuracy": 0.31, "tokens": 51200, "js_base": 0.012},
                       "fr": {"ppl": 30.5, "accuracy": 0.35, "tokens": 51200}},
        "base": {"base": {"ppl": 40.0, "accuracy": 0.32, "tokens": 51200},
                 "fr": {"ppl": 210.0, "accuracy": 0.12, "tokens": 51200}},
        "linear:0.5<x>": {"base": {"ppl": 55.0, "accuracy": 0.28, "tokens": 51200},
                          "fr": {"ppl": 45.0, "accuracy": 0.30, "tokens": 51200}},
        "linear:0.3": {"base": {"ppl": 80.0, "accuracy": 0.2, "tokens": 51200},
                       "fr": {"ppl": 35.0, "accuracy": 0.32, "tokens": 51200}},
        "oracle": {"base": {"ppl": 40.0, "accuracy": 0.32, "tokens": 51200},
                   "fr": {"ppl": 25.0, "accuracy": 0.36, "tokens": 51200}},
        "bayes": {"base": {"ppl": 42.0, "accuracy": 0.3, "tokens": 51200},
                  "fr": {"ppl": 28.0, "accuracy": 0.34, "tokens": 51200}},
    },
    "settings": {"block_size": 128},
    "best": {"linear": "linear:0.5<x>"},
    "reads_answer": ["oracle"],
    "stacks_per_token": {"superposed": 2, "base": 1, "linear:0.5<x>": 1, "linear:0.3": 1, "oracle": 1, "bayes": 2},
    "throughput_tokens_per_s": {"superposed": 900.0, "base": 2000.0},
}


def test_main_table_is_compact_grouped_and_sorted_best_first_within_groups():
    section = table_from_eval(EVAL)
    assert section.headers == ["model", "base ppl (× oracle)", "fr ppl (× oracle)", "stacks"]
    names = [row[0] for row in section.rows]
    # groups in order; inside the merges linear:0.5 (geometric-mean perplexity 49.7) comes before linear:0.3 (52.9)
    assert names == ["superposed", "base", "bayes", f"linear:0.5<x> {STAR}", "linear:0.3", "oracle"]
    assert section.row_groups == ["superposed", "single stacks", "mixtures and routers", "weight merges",
                                  "weight merges", "bounds (read the answer)"]
    assert section.rows[0] == ["superposed", "41.20 (1.030×)", "30.50 (1.220×)", "2"]
    # bold: the best perplexity per set among the models that do not read the answer (not the oracle's 25.0)
    assert section.highlight == {(1, 1), (2, 2)}
    with pytest.raises(ValueError):
        table_from_eval({"models": {}})


def test_every_metric_is_in_a_collapsed_table_per_set():
    details = detail_tables_from_eval(EVAL)
    assert [d.heading for d in details] == ["All metrics on base", "All metrics on fr", "Evaluation throughput"]
    assert all(d.collapsed for d in details)
    assert details[0].headers == ["model", "ppl", "accuracy", "tokens", "js_base"]
    assert details[0].rows[0] == ["superposed", "41.20", "31.0%", "51200", "0.012"]
    assert details[0].rows[1][4] == "–"


def test_write_report_is_self_contained(tmp_path):
    image = plots.plot_alpha(np.linspace(0, 1, 4), tmp_path / "alpha.png")
    sections = [
        ReportSection("Blend weights", "Look for where α switches from base to expert.", image=image),
        table_from_eval(EVAL),
        *detail_tables_from_eval(EVAL),
    ]
    index = write_report(tmp_path / "report", "Superposition <analysis>", sections)
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    assert "Look for where α switches from base to expert." in page
    assert sections[1].caption in page
    assert '<img src="data:image/png;base64,' in page
    assert "linear:0.5&lt;x&gt; " + STAR in page and "<x>" not in page
    assert "Superposition &lt;analysis&gt;" in page
    assert "<strong>40.00 (1.000×)</strong>" in page and "210.00" in page
    assert '<tr class="group"><th colspan="4">weight merges</th></tr>' in page
    assert page.count("<details>") == 3 and "<summary>All metrics on fr</summary>" in page
    assert "http://" not in page and "https://" not in page


def test_section_needs_image_or_table(tmp_path):
    with pytest.raises(ValueError):
        ReportSection("x", "y")
    with pytest.raises(ValueError):
        ReportSection("x", "y", image="a.png", headers=["a"], rows=[["1"]])
    with pytest.raises(ValueError, match="cells"):
        ReportSection("x", "y", headers=["a", "b"], rows=[["1"]])
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path, "t", [ReportSection("x", "y", image=tmp_path / "missing.png")])
