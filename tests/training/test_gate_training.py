"""Training the gates: label-free on a two-domain task, and with synthetic code-switching.

The stacks must know their domains for gates to have anything to learn, so the module first trains a
tiny base on lower-case English and fine-tunes a copy on upper-case French (a few seconds).
"""
import copy
import json

import pytest
import torch
from helpers import ENGLISH, FRENCH, char_tokenizer, tiny_model, write_domains

from superpose.cli.commands import main
from superpose.data.text import tokenize_blocks
from superpose.demo.tiny_experts import train_causal_lm
from superpose.model.superposed import SuperposedModel
from superpose.training.loop import train
from superpose.training.presets import preset_settings

EN_LINE, FR_LINE = "my friend has a red car", "NOUS AIMONS LA MER"


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experts")
    tokenizer = char_tokenizer()
    base = tiny_model("gpt2", seed=0)
    train_causal_lm(base, tokenize_blocks(ENGLISH * 20, tokenizer, 32), 80, 8, 1e-2, 0, "base", progress=False)
    expert = copy.deepcopy(base)
    train_causal_lm(expert, tokenize_blocks(FRENCH * 20, tokenizer, 32), 80, 8, 1e-2, 1, "fr", progress=False)
    paths = {}
    for name, model in (("base", base), ("fr", expert)):
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
        paths[name] = tmp / name
    return paths


def _dynamic(experts, **model_overrides):
    """The dynamic preset; the training tests turn its evidence off (`gate_evidence="none"`), because the evidence
    alone already separates the domains before training, and a test of training must see the gates learn."""
    from dataclasses import replace

    from superpose.core.loading import load_causal_lm

    model_settings, train_settings = preset_settings("dynamic")
    model_settings = replace(model_settings, **model_overrides)

    torch.manual_seed(0)
    model = SuperposedModel.from_models(load_causal_lm(str(experts["base"])),
                                        {"fr": load_causal_lm(str(experts["fr"]))}, model_settings)
    return model, train_settings


def _gates(model, text: str) -> torch.Tensor:
    """(T, M) weights of the last layer for each token of `text`."""
    ids = torch.tensor([char_tokenizer()(text)["input_ids"]])
    with torch.no_grad():
        return model(ids, output_gates=True).gate_weights[-1][0]


def _train_settings(train_settings, **values):
    values = dict(dict(batch_size=8, block_size=32, max_steps=60, seed=0, max_valid_blocks=8, device="cpu"), **values)
    return type(train_settings)(**{**train_settings.__dict__, **values})


def test_label_free_training_lowers_the_lm_loss_and_separates_the_gates(experts, tmp_path):
    model, settings = _dynamic(experts, gate_evidence="none")
    en, fr = write_domains(tmp_path, repeat=12)
    unlabelled = {"unlabelled": str(en), "unlabelled:2": str(fr)}
    tokenizer = char_tokenizer()
    before = _valid_lm(model, tokenizer, unlabelled)
    gap_before = _gates(model, EN_LINE)[3:, 0].mean() - _gates(model, FR_LINE)[3:, 0].mean()
    assert abs(gap_before) < 0.05  # untrained: the static prior, the same for both languages
    train(model, tokenizer, unlabelled, None, tmp_path / "run", _train_settings(settings), progress=False)
    model.eval()
    assert _valid_lm(model, tokenizer, unlabelled) < before - 0.1
    on_base_en = _gates(model, EN_LINE)[3:, 0].mean()
    on_base_fr = _gates(model, FR_LINE)[3:, 0].mean()
    assert on_base_en > 0.8 and on_base_fr < 0.2, (float(on_base_en), float(on_base_fr))


def _valid_lm(model, tokenizer, files) -> float:
    from superpose.core.metrics import LMScore
    from superpose.data.text import collate, load_texts

    score = LMScore()
    with torch.no_grad():
        for path in files.values():
            blocks = tokenize_blocks(load_texts(path), tokenizer, 32, 8)
            batch = collate(blocks, [0] * len(blocks), 0)
            score.update(model(batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
    return score.nll


def test_switch_rate_teaches_the_gates_to_follow_a_switch_within_a_few_tokens(experts, tmp_path):
    model, settings = _dynamic(experts, gate_evidence="none")
    assert _gates(model, EN_LINE).std() < 0.01  # untrained: one weight for every token
    en, fr = write_domains(tmp_path, repeat=12)
    labelled = {"base": str(en), "fr": str(fr)}
    train(model, char_tokenizer(), labelled, None, tmp_path / "run",
          _train_settings(settings, switch_rate=0.5, gate_label_weight=1.0), progress=False)
    model.eval()
    line = f"{EN_LINE} {FR_LINE} {EN_LINE}"
    weights = _gates(model, line)[:, 1]  # on the French stack
    first, second = len(EN_LINE) + 1, len(EN_LINE) + 1 + len(FR_LINE) + 1  # the switches (character tokens)
    # character tokens: a space is shared by both languages, so judge each segment by its mean weight
    segments = [weights[3:first].mean(), weights[first + 3 : second].mean(), weights[second + 3 :].mean()]
    assert segments[0] < 0.2 and segments[1] > 0.8 and segments[2] < 0.2, [float(w) for w in segments]


def test_cli_trains_two_experts_label_free_with_the_default_preset(experts, tmp_path, capsys):
    en, fr = write_domains(tmp_path, repeat=4)
    de = tmp_path / "de.txt"
    de.write_text("\n".join(FRENCH[::-1] * 4), encoding="utf-8")
    code = main(["train", "--base", str(experts["base"]), "--expert", f"fr={experts['fr']}",
                 "--expert", f"de={experts['fr']}", "--train", str(en), "--train", str(fr), "--train", f"de={de}",
                 "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--block-size", "16",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["expert_order"] == ["fr", "de"] and sorted(config["experts"]) == ["de", "fr"]
    assert config["settings"]["gate"] == "token" and config["settings"]["graph"] == "parallel"
    loaded = SuperposedModel.from_pretrained(tmp_path / "run")
    assert loaded.stack_names == ["base", "fr", "de"]
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "de" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()


def test_cli_paper_preset_and_overrides(experts, tmp_path):
    en, fr = write_domains(tmp_path, repeat=4)
    common = ["train", "--base", str(experts["base"]), "--expert", f"fr={experts['fr']}", "--train", f"base={en}",
              "--train", f"fr={fr}", "--max-steps", "1", "--batch-size", "4", "--block-size", "16", "--device", "cpu"]
    assert main([*common, "--preset", "paper", "--out", str(tmp_path / "paper")]) == 0
    paper = json.loads((tmp_path / "paper" / "config.json").read_text())["settings"]
    assert paper["gate"] == "static" and paper["graph"] == "sequential" and paper["head"] == "base"
    assert main([*common, "--preset", "paper", "--gate", "token", "--ae-residual",
                 "--out", str(tmp_path / "mixed")]) == 0
    mixed = json.loads((tmp_path / "mixed" / "config.json").read_text())["settings"]
    assert mixed["gate"] == "token" and mixed["ae_residual"] is True and mixed["graph"] == "sequential"


def test_switch_rate_replaces_that_share_of_blocks_with_per_token_labelled_code_switched_blocks(tmp_path):
    from superpose.training.loop import MIXED, load_labelled

    en, fr = write_domains(tmp_path, repeat=12)
    tokenizer = char_tokenizer()
    files = {"base": str(en), "fr": str(fr)}
    plain = load_labelled(files, ["base", "fr"], tokenizer, 32, None)
    data = load_labelled(files, ["base", "fr"], tokenizer, 32, None, switch_rate=0.25, seed=3)
    assert len(data) == len(plain) and len(data.token_domains) == round(0.25 * len(plain))
    switches = 0
    for index, labels in data.token_domains.items():
        assert data.domains[index] == MIXED
        text = tokenizer.convert_ids_to_tokens(data.blocks[index].tolist())
        for token, label in zip(text, labels.tolist()):
            if token.isalpha():  # English is lower case, French upper case in these files
                assert label == (1 if token.isupper() else 0), (token, label)
        switches += int(((labels[1:] != labels[:-1]) & (labels[1:] >= 0) & (labels[:-1] >= 0)).sum())
    assert switches >= len(data.token_domains)  # the blocks do switch language inside
    unlabelled = load_labelled({"unlabelled": str(en), "unlabelled:2": str(fr)}, ["base", "fr"], tokenizer, 32, None,
                               switch_rate=0.25, seed=3)
    assert all(bool((labels == -1).all()) for labels in unlabelled.token_domains.values())  # label-free stays so


def test_default_preset_trains_on_a_single_file_and_resume_refuses_other_experts(experts, tmp_path, capsys):
    en, _ = write_domains(tmp_path, repeat=4)
    run = str(tmp_path / "run")
    common = ["train", "--base", str(experts["base"]), "--train", str(en), "--out", run, "--batch-size", "4",
              "--block-size", "16", "--device", "cpu"]
    with pytest.warns(UserWarning, match="one: no code-switched blocks"):
        assert main([*common, "--expert", f"fr={experts['fr']}", "--expert", f"de={experts['base']}",
                     "--max-steps", "1"]) == 0
    capsys.readouterr()
    swapped = ["--expert", f"de={experts['base']}", "--expert", f"fr={experts['fr']}", "--max-steps", "2", "--resume"]
    with pytest.warns(UserWarning):
        assert main([*common, *swapped]) == 2
    assert "stacks" in capsys.readouterr().err


def _switched_lines(count: int, seed: int) -> list[str]:
    """Lines whose sentences alternate between the two languages, 2-5 sentences each."""
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(count):
        parts, french = [], bool(torch.randint(0, 2, (1,), generator=generator))
        for _ in range(int(torch.randint(2, 6, (1,), generator=generator))):
            pool = FRENCH if french else ENGLISH
            parts.append(pool[int(torch.randint(0, len(pool), (1,), generator=generator))])
            french = not french
        lines.append(" ".join(parts))
    return lines


def test_a_trained_rate_mixture_gate_beats_its_untrained_start_on_switching_text(experts, tmp_path):
    """Untrained, the gate is the training-free rate mixture; trained on switched blocks it must do better on
    held-out switching lines (with the gate frozen, nothing changes and this fails)."""
    model, settings = _dynamic(experts, gate_evidence="fixed_share_mix")
    tokenizer = char_tokenizer()
    held_out = tmp_path / "switched.txt"
    held_out.write_text("\n".join(_switched_lines(24, seed=1)), encoding="utf-8")
    before = _valid_lm(model, tokenizer, {"switched": held_out})
    en, fr = write_domains(tmp_path, repeat=12)
    train(model, tokenizer, {"base": str(en), "fr": str(fr)}, None, tmp_path / "run",
          _train_settings(settings, switch_rate=0.5), progress=False)
    model.eval()
    after = _valid_lm(model, tokenizer, {"switched": held_out})
    assert after < before - 0.05, (before, after)
