import json

import pytest
import torch

from superpose.cli import main
from superpose.modeling import SuperposedModel
from superpose.settings import ModelSettings, TrainSettings
from superpose.training import train

from helpers import char_tokenizer, save_pair, tiny_pair, write_domains


def _settings(**overrides):
    values = dict(epochs=2, batch_size=8, block_size=32, lr_alpha=1e-2, lr_ae=1e-2, max_valid_blocks=8, seed=0)
    values.update(overrides)
    return TrainSettings(**values)


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_training_lowers_loss_and_states_follow_the_right_expert(tmp_path, variant):
    # A wider weight init gives the random stacks clearly different states for the AEs to tell apart.
    base, expert = tiny_pair("gpt2", init=0.3)
    en, fr = write_domains(tmp_path, repeat=12)
    model = SuperposedModel.from_models(base, expert, ModelSettings(variant=variant, ae_layers=[0, 1]))
    files = {"base": str(en), "expert": str(fr)}
    settings = _settings(epochs=20, lr_alpha=3e-2, lr_ae=3e-2)
    result = train(model, char_tokenizer(), files, files, tmp_path / "run", settings, progress=False)
    losses = [h["valid_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    tokenizer = char_tokenizer()
    model.eval()
    with torch.no_grad():
        for text_file, right in ((en, 0), (fr, 1)):
            lines = text_file.read_text().splitlines()[:6]
            for line in lines:
                ids = torch.tensor([tokenizer(line)["input_ids"]])
                states = model(ids, output_hidden_states=True).hidden_states
                independent = model.independent_states(ids, None)
                for layer in model.ae_layers:
                    to_right = (states[layer + 1] - independent[right][layer]).norm()
                    to_wrong = (states[layer + 1] - independent[1 - right][layer]).norm()
                    assert to_right < to_wrong, f"layer {layer}, domain {right}: {line!r}"


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, variant):
    en, fr = write_domains(tmp_path)
    files = {"base": str(en), "expert": str(fr)}
    settings = ModelSettings(variant=variant, ae_layers=[1])

    def fresh():
        torch.manual_seed(0)
        return SuperposedModel.from_models(*tiny_pair("gpt2"), settings)

    whole = fresh()
    train(whole, char_tokenizer(), files, None, tmp_path / "whole", _settings(epochs=2), progress=False)
    stopped = fresh()
    train(stopped, char_tokenizer(), files, None, tmp_path / "split", _settings(epochs=1), progress=False)
    resumed = fresh()  # a new process: nothing carried over but the run folder
    train(resumed, char_tokenizer(), files, None, tmp_path / "split", _settings(epochs=2), resume=True, progress=False)
    for key, value in whole.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[key], value, atol=1e-6, rtol=0)
    from superpose.checkpoint import find_checkpoint
    progress = json.loads((find_checkpoint(tmp_path / "split") / "progress.json").read_text())
    assert progress["epoch"] == 2


def test_resume_after_max_steps_mid_epoch_continues_the_same_epoch(tmp_path):
    en, fr = write_domains(tmp_path)
    files = {"base": str(en), "expert": str(fr)}
    settings = ModelSettings(variant="2d", ae_layers=[1])  # 2d: dropout must draw the same masks after resuming

    def fresh():
        torch.manual_seed(0)
        return SuperposedModel.from_models(*tiny_pair("gpt2"), settings)

    whole = fresh()
    full = train(whole, char_tokenizer(), files, None, tmp_path / "whole", _settings(epochs=2), progress=False)
    stopped = fresh()
    train(stopped, char_tokenizer(), files, None, tmp_path / "split", _settings(epochs=2, max_steps=3), progress=False)
    resumed = fresh()
    again = train(resumed, char_tokenizer(), files, None, tmp_path / "split", _settings(epochs=2), resume=True,
                  progress=False)
    assert again.steps == full.steps > 3
    for key, value in whole.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[key], value, atol=1e-6, rtol=0)


def test_existing_checkpoint_needs_resume(tmp_path):
    en, fr = write_domains(tmp_path)
    files = {"base": str(en), "expert": str(fr)}
    model = SuperposedModel.from_models(*tiny_pair("gpt2"))
    train(model, char_tokenizer(), files, None, tmp_path / "run", _settings(epochs=1), progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(model, char_tokenizer(), files, None, tmp_path / "run", _settings(epochs=1), progress=False)


def _cli(tmp_path, *extra, expert=None, train_files=None):
    base, other = save_pair(tmp_path)
    en, fr = write_domains(tmp_path)
    argv = ["train", "--base", str(base), "--expert", expert or f"fr={other}",
            *(train_files or ["--train", f"base={en}", "--train", f"fr={fr}"]),
            "--out", str(tmp_path / "run"), "--batch-size", "4", "--block-size", "16", "--max-steps", "2", *extra]
    return main(argv)


def test_cli_train_generate_info(tmp_path, capsys):
    assert _cli(tmp_path, "--variant", "2d", "--valid", f"fr={tmp_path / 'fr.txt'}") == 0
    assert "training summary" in capsys.readouterr().out
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "5"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.startswith("the cat")
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == greedy  # greedy is deterministic
    assert main(["generate", str(tmp_path / "run"), "--prompt", "le", "--temperature", "0.8", "--top-k", "5",
                 "--top-p", "0.9", "--seed", "1"]) == 0
    assert main(["info", str(tmp_path / "run")]) == 0
    info = capsys.readouterr().out
    assert "trainable" in info and "frozen" in info and '"variant": "2d"' in info


def test_cli_config_file_and_unknown_setting(tmp_path, capsys):
    (tmp_path / "ok.yaml").write_text("variant: 2d\nepochs: 1\n")
    assert _cli(tmp_path, "--config", str(tmp_path / "ok.yaml"), "--variant", "1d") == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["variant"] == "1d"  # flags win
    (tmp_path / "bad.yaml").write_text("variant: 1d\nlearning_rate: 3\n")
    assert _cli(tmp_path, "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "other")) == 2
    assert "unknown setting(s): learning_rate" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(None, "not found"), ("", "no text"), (b"\xff\xfe bad", "UTF-8")])
def test_cli_bad_data_files(tmp_path, capsys, content, message):
    path = tmp_path / "data.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert _cli(tmp_path, train_files=["--train", f"base={path}"]) == 2
    assert message in capsys.readouterr().err


def test_cli_data_name_must_match_a_model(tmp_path, capsys):
    en, _ = write_domains(tmp_path)
    assert _cli(tmp_path, train_files=["--train", f"german={en}"]) == 2
    assert "matches no model" in capsys.readouterr().err


def test_cli_mismatched_models(tmp_path, capsys):
    from helpers import tiny_model
    other = tiny_model("gpt2", layers=3)
    other.save_pretrained(tmp_path / "deeper")
    assert _cli(tmp_path, expert=f"fr={tmp_path / 'deeper'}") == 2
    err = capsys.readouterr().err
    assert "cannot be superposed" in err and "decoder layers 2 vs 3" in err


def test_cli_run_whose_base_moved_gives_a_clear_error(tmp_path, capsys):
    assert _cli(tmp_path) == 0
    (tmp_path / "base").rename(tmp_path / "moved")
    assert main(["info", str(tmp_path / "run")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "run"), "--prompt", " "]) == 2


def test_cli_missing_model_folder(tmp_path, capsys):
    assert _cli(tmp_path, expert=f"fr={tmp_path / 'nowhere'}") == 2
    assert "not found" in capsys.readouterr().err


def test_unsupported_architecture_names_what_is_missing():
    from transformers import BertConfig, BertLMHeadModel

    from superpose.architecture import UnsupportedModelError
    bert = BertLMHeadModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=64, is_decoder=True))
    with pytest.raises(UnsupportedModelError, match="unsupported architecture BertLMHeadModel.*missing transformer.wte"):
        SuperposedModel.from_models(bert, bert)


def test_bad_setting_values():
    from superpose.settings import SettingsError
    with pytest.raises(SettingsError, match="variant"):
        ModelSettings(variant="3d")
    with pytest.raises(SettingsError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(SettingsError, match="do not exist"):
        SuperposedModel.from_models(*tiny_pair("gpt2"), ModelSettings(ae_layers=[5]))
