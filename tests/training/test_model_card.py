"""Model cards: `train`, `export` and `distill` folders carry a Hugging Face README.md; `eval` fills in its table.

And `eval --model NAME=DIR` counts a distilled or exported folder as one stack, like any plain model.
"""
import json

import yaml
from helpers import save_pair, write_domains

from superpose.cli.commands import main
from superpose.model.model_card import EVAL_END, EVAL_START, NO_EVAL


def _card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    evaluation = text.split(EVAL_START, 1)[1].split(EVAL_END, 1)[0]
    return text, header, evaluation


def test_cards_of_train_export_and_distill_and_eval_fills_them_in(tmp_path, capsys):
    base, other = save_pair(tmp_path)
    en, fr = write_domains(tmp_path, repeat=3)
    run, merged, student = tmp_path / "run", tmp_path / "merged", tmp_path / "student"
    assert main(["train", "--base", str(base), "--expert", f"fr={other}", "--train", f"base={en}", "--train",
                 f"fr={fr}", "--valid", f"base={en}", "--out", str(run), "--batch-size", "4", "--block-size", "16",
                 "--max-steps", "2"]) == 0
    text, header, evaluation = _card(run)
    assert header["base_model"] == [str(base.resolve()), str(other.resolve())]
    assert header["library_name"] == "superpose" and "superpose" in header["tags"]
    assert "2 stack(s)" in text and f"`{en.resolve()}`" in text and '"max_steps": 2' in text
    assert "valid_ppl_base" in evaluation  # the run's own validation is its latest evaluation

    assert main(["export", str(run), "--out", str(merged)]) == 0
    text, header, evaluation = _card(merged)
    assert header["library_name"] == "transformers" and "hard-merge" in header["tags"]
    assert header["base_model"] == [str(base.resolve()), str(other.resolve())]
    assert "per_layer_weights" in text and f"`{en.resolve()}`" in text and NO_EVAL in evaluation

    assert main(["distill", str(run), "--train", str(en), "--train", str(fr), "--out", str(student),
                 "--max-steps", "2", "--batch-size", "4", "--block-size", "16", "--lora", "2"]) == 0
    text, header, evaluation = _card(student)
    assert header["library_name"] == "transformers" and "distilled" in header["tags"]
    assert '"lora": 2' in text and f"`{fr.resolve()}`" in text and NO_EVAL in evaluation

    capsys.readouterr()
    assert main(["eval", str(run), "--data", f"base={en}", "--data", f"fr={fr}", "--baselines", "bayes",
                 "--model", f"merged={merged}", "--model", f"distilled={student}", "--json",
                 str(tmp_path / "eval.json"), "--block-size", "16"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["stacks_per_token"]["distilled"] == 1 and result["stacks_per_token"]["merged"] == 1
    assert result["stacks_per_token"]["superposed"] == 2
    for folder in (run, merged, student):  # the latest evaluation table, in each card this package wrote
        _, _, evaluation = _card(folder)
        assert "distilled" in evaluation and "merged" in evaluation and "bayes" in evaluation, folder
