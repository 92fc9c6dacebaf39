"""`superpose gates`: one row per token, each stack's weights summing to 1, clear errors, static runs noted."""
import pytest
import torch
from helpers import char_tokenizer, paper_model, tiny_model

from superpose.cli.commands import main
from superpose.core.settings import SettingsError
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel
from superpose.report.gate_view import STATIC_NOTE, gates_table, show_gates, token_gates, visible_token

TEXT = "the cat LE CHAT"
STACKS = ["base", "fr", "de"]


def _save_run(tmp, name: str, experts: list[str], settings: ModelSettings, random_gate: bool) -> str:
    """A saved tiny run; `random_gate` gives the token gate random output weights so weights vary by token."""
    models = {n: tiny_model("gpt2", seed=i) for i, n in enumerate(["base", *experts])}
    for n, model in models.items():
        model.save_pretrained(tmp / n)
        char_tokenizer().save_pretrained(tmp / n)
    superposed = SuperposedModel.from_models(models["base"], {n: models[n] for n in experts}, settings,
                                             str(tmp / "base"), expert_paths={n: str(tmp / n) for n in experts})
    if random_gate:
        torch.manual_seed(0)
        for net in superposed.blend.gate.nets:
            torch.nn.init.normal_(net.weight, std=1.0)
    superposed.save_pretrained(tmp / name)
    char_tokenizer().save_pretrained(tmp / name)
    return str(tmp / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gates")
    return {"token": _save_run(tmp, "token-run", ["fr", "de"], paper_model(gate="token"), random_gate=True),
            "static": _save_run(tmp, "static-run", ["fr"], paper_model(), random_gate=False)}


def _rows(printed: str) -> list[list[str]]:
    """The table's body rows as cells (between the '-+-' rule and the optional note)."""
    lines = printed.rstrip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if set(line) <= set("-+") and line) + 1
    return [[c.strip() for c in line.split(" | ")] for line in lines[start:] if not line.startswith("note:")]


def test_gates_command_prints_one_row_per_token_and_weights_sum_to_one(runs, capsys):
    assert main(["gates", runs["token"], "--text", TEXT, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("#"))
    assert [c.strip() for c in header.split(" | ")][2:] == [f"{s} {k}" for s in STACKS for k in ("mean", "last")]
    assert "stacks base, fr, de" in printed and STATIC_NOTE not in printed
    rows = _rows(printed)
    assert len(rows) == len(char_tokenizer()(TEXT)["input_ids"]) == len(TEXT)
    assert [row[1] for row in rows] == [visible_token(c) for c in TEXT]
    for row in rows:
        weights = [float(x) for x in row[2:]]
        assert sum(weights[0::2]) == pytest.approx(1.0, abs=2e-3)  # mean over layers
        assert sum(weights[1::2]) == pytest.approx(1.0, abs=2e-3)  # last layer


def test_token_gates_are_per_layer_and_token_and_vary_with_a_token_gate(runs):
    model = SuperposedModel.from_pretrained(runs["token"])
    tokens, weights = token_gates(model, char_tokenizer(), TEXT)
    assert tokens == list(TEXT)
    assert weights.shape == (model.config.num_hidden_layers, len(TEXT), 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    assert weights.std(dim=1).max() > 0.05  # a (randomised) token gate routes tokens differently


def test_static_gate_is_noted_and_constant_over_tokens(runs):
    printed = show_gates(runs["static"], TEXT, device="cpu")
    assert printed.endswith(STATIC_NOTE)
    rows = _rows(printed)
    assert len(rows) == len(TEXT) and len({tuple(row[2:]) for row in rows}) == 1
    model = SuperposedModel.from_pretrained(runs["static"])
    _, weights = token_gates(model, char_tokenizer(), TEXT)
    torch.testing.assert_close(weights, weights[:, :1].expand_as(weights))


def test_empty_text_is_a_clear_error(runs, capsys):
    assert main(["gates", runs["token"], "--text", "  "]) == 2
    assert "--text must not be empty" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="must not be empty"):
        token_gates(None, char_tokenizer(), "")


def test_too_long_text_is_a_clear_error(runs):
    model = SuperposedModel.from_pretrained(runs["static"])
    with pytest.raises(SettingsError, match="at most 128"):
        token_gates(model, char_tokenizer(), "a" * 200)


def test_table_checks_shapes_and_shows_tokens_visibly():
    assert visible_token(" a\n") == "␣a\\n" and visible_token("it's") == "it's"
    with pytest.raises(ValueError, match="do not match"):
        gates_table(["a", "b"], torch.full((2, 3, 2), 0.5), ["base", "fr"])


def test_gates_reads_the_first_record_of_a_file(runs, tmp_path, capsys):
    record = tmp_path / "docs.jsonl"
    record.write_text('{"text": "the cat LE CHAT"}\n{"text": "not this one"}\n', encoding="utf-8")
    assert main(["gates", runs["token"], "--text-file", str(record), "--device", "cpu"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [row[1] for row in rows] == [visible_token(c) for c in "the cat LE CHAT"]
    assert main(["gates", runs["token"], "--device", "cpu"]) == 2
    assert "--text TEXT or --text-file FILE" in capsys.readouterr().err
