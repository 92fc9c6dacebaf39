import json

import pytest
import torch
from helpers import (
    char_tokenizer,
    kill_at_first_checkpoint,
    paper_model,
    paper_train,
    save_pair,
    tiny_pair,
    write_domains,
)

from superpose.cli.commands import main
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel
from superpose.training.loop import train
from superpose.training.settings import TrainSettings


def _settings(**overrides):
    values = dict(epochs=2, batch_size=8, block_size=32, lr_blend=1e-2, lr_ae=1e-2, max_valid_blocks=8, seed=0)
    values.update(overrides)
    return paper_train(**values)


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_training_lowers_loss_and_states_follow_the_right_expert(tmp_path, variant):
    # A wider weight init gives the random stacks clearly different states for the AEs to tell apart.
    base, expert = tiny_pair("gpt2", init=0.3)
    en, fr = write_domains(tmp_path, repeat=12)
    model = SuperposedModel.from_models(base, expert, paper_model(variant=variant, ae_layers=[0, 1]))
    files = {"base": str(en), "expert": str(fr)}
    settings = _settings(epochs=20, lr_blend=3e-2, lr_ae=3e-2)
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
    settings = paper_model(variant=variant, ae_layers=[1])

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
    from superpose.training.checkpoint import find_checkpoint
    progress = json.loads((find_checkpoint(tmp_path / "split") / "progress.json").read_text())
    assert progress["epoch"] == 2


def test_resume_after_max_steps_mid_epoch_continues_the_same_epoch(tmp_path):
    en, fr = write_domains(tmp_path)
    files = {"base": str(en), "expert": str(fr)}
    settings = paper_model(variant="2d", ae_layers=[1])  # 2d: dropout must draw the same masks after resuming

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
    model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model())
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

    from superpose.model.architecture import UnsupportedModelError
    bert = BertLMHeadModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=64, is_decoder=True))
    with pytest.raises(UnsupportedModelError,
                       match="unsupported architecture BertLMHeadModel.*missing transformer.wte"):
        SuperposedModel.from_models(bert, bert)


def test_bad_setting_values():
    from superpose.core.settings import SettingsError
    with pytest.raises(SettingsError, match="variant"):
        ModelSettings(variant="3d")
    with pytest.raises(SettingsError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(SettingsError, match="do not exist"):
        SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(ae_layers=[5]))


def test_bf16_experts_train_alpha_and_autoencoders_in_float32(tmp_path):
    base, expert = tiny_pair("gpt2")
    base, expert = base.to(torch.bfloat16), expert.to(torch.bfloat16)
    en, fr = write_domains(tmp_path)
    torch.manual_seed(0)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[1]))
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    # the paper's learning rates: a step of ~1e-4 on control points near 0.5 is below bf16's resolution there
    settings = paper_train(epochs=1, max_steps=20, batch_size=4, block_size=16, seed=0)
    result = train(model, char_tokenizer(), {"base": str(en), "expert": str(fr)}, None, tmp_path / "run", settings,
                   progress=False)
    assert result.steps == 20
    after = model.trainable_state_dict()
    assert (after["blend.spline.control"] - before["blend.spline.control"]).abs().max() > 5e-4
    assert (after["autoencoders.1.encoder.0.weight"] - before["autoencoders.1.encoder.0.weight"]).abs().max() > 5e-4
    assert base.dtype == torch.bfloat16 and model.stack_dtype == torch.bfloat16  # stacks stay as loaded
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["train_settings"]
    assert recorded["dtype"] == "bfloat16"
    with torch.no_grad():
        logits = model(torch.tensor([[3, 4, 5, 6]])).logits
    assert torch.isfinite(logits.float()).all()


def test_cli_dtype_loads_the_stacks_in_that_dtype(tmp_path, capsys):
    assert _cli(tmp_path, "--dtype", "bfloat16") == 0
    capsys.readouterr()
    run = tmp_path / "run"
    loaded = SuperposedModel.from_pretrained(run, dtype="bfloat16")
    assert loaded.base.dtype == loaded.experts["fr"].dtype == torch.bfloat16
    assert loaded.blend.spline.control.dtype == torch.float32
    assert main(["generate", str(run), "--prompt", "the cat", "--max-new-tokens", "3", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.startswith("the cat")


@pytest.mark.parametrize("loader", ["superposed", "auto"])
def test_a_loaded_run_is_in_inference_mode(tmp_path, loader):
    from transformers import AutoModelForCausalLM
    base, expert = tiny_pair("gpt2")
    base.save_pretrained(tmp_path / "base")
    expert.save_pretrained(tmp_path / "expert")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(variant="2d", ae_layers=[0, 1]),
                                        str(tmp_path / "base"), {"fr": str(tmp_path / "expert")})
    model.save_pretrained(tmp_path / "run")
    cls = SuperposedModel if loader == "superposed" else AutoModelForCausalLM
    loaded = cls.from_pretrained(tmp_path / "run")
    assert not loaded.training and not any(m.training for m in loaded.modules())
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.no_grad():  # the 2d autoencoders' dropout would make two identical forwards differ
        assert torch.equal(loaded(ids).logits, loaded(ids).logits)


def test_max_steps_is_the_length_of_training(tmp_path):
    en, fr = write_domains(tmp_path, repeat=2)
    files = {"base": str(en), "expert": str(fr)}
    model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(ae_layers=[1]))
    result = train(model, char_tokenizer(), files, None, tmp_path / "run", _settings(epochs=1, max_steps=15),
                   progress=False)
    steps_per_epoch = result.history[0]["step"]
    assert steps_per_epoch < 15  # the data hold fewer batches than asked: epochs repeat
    assert result.steps == 15 and result.history[-1]["step"] == 15


def test_validation_losses_are_token_weighted(tmp_path):
    from superpose.training.loop import domain_names, load_labelled, validate
    en, fr = write_domains(tmp_path, repeat=2)
    files = {"base": str(en), "expert": str(fr)}
    model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(ae_layers=[1])).eval()
    tokenizer = char_tokenizer()
    settings = _settings(batch_size=3, block_size=40).resolved("1d")
    data = load_labelled(files, domain_names(model), tokenizer, settings.block_size, None)
    lengths = sorted({b.numel() for b in data.blocks})
    assert len(lengths) > 1  # short last blocks: a mean of batch means would weight them wrongly
    got = validate(model, data, settings, pad_id=0)
    nll, count = 0.0, 0
    with torch.no_grad():
        for block in data.blocks:  # one sequence at a time, no padding: an independent computation
            logits = model(block[None]).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, block[1:], reduction="sum").item()
            count += block.numel() - 1
    assert got["valid_lm"] == pytest.approx(nll / count, rel=1e-5)
    assert got["valid_loss"] == pytest.approx(3 * got["valid_recon"] + got["valid_lm"], rel=1e-6)


def test_resume_refuses_changed_data_order_settings(tmp_path):
    en, fr = write_domains(tmp_path)
    files = {"base": str(en), "expert": str(fr)}

    def run(settings, files=files):
        model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(ae_layers=[1]))
        return train(model, char_tokenizer(), files, None, tmp_path / "run", settings, resume=True, progress=False)

    run(_settings(epochs=1, max_steps=2))
    for changed, name in ((dict(batch_size=4), "batch_size"), (dict(block_size=16), "block_size"),
                          (dict(seed=1), "seed"), (dict(max_train_blocks=3), "max_train_blocks")):
        with pytest.raises(ValueError, match=f"--resume.*{name} \\(checkpoint"):
            run(_settings(epochs=2, **changed))
    edited = tmp_path / "fr_edited.txt"
    edited.write_text(fr.read_text() + "\nUNE LIGNE DE PLUS")
    with pytest.raises(ValueError, match="train file 'expert' \\(path changed"):
        run(_settings(epochs=2), {"base": str(en), "expert": str(edited)})
    fr.write_text(fr.read_text() + "\nUNE LIGNE DE PLUS")
    with pytest.raises(ValueError, match="train file 'expert' \\(content changed"):
        run(_settings(epochs=2))
    fr.write_text(fr.read_text().rsplit("\n", 1)[0])  # back to the original bytes: resuming works again
    # the files' blocks are concatenated in the order given, so the order is part of the data order
    with pytest.raises(ValueError, match="train_file_order"):
        run(_settings(epochs=2), {"expert": str(fr), "base": str(en)})
    assert run(_settings(epochs=2, lr_blend=5e-3)).steps > 2  # learning rates and epochs may change


def test_step_checkpoints_keep_the_latest(tmp_path):
    from superpose.training.checkpoint import list_checkpoints
    en, fr = write_domains(tmp_path)
    model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(ae_layers=[1]))
    train(model, char_tokenizer(), {"base": str(en), "expert": str(fr)}, None, tmp_path / "run",
          _settings(epochs=1, max_steps=7, save_every=2, keep_checkpoints=3), progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004", "step-00000006", "step-00000007"]


def test_sigkilled_training_resumes_to_the_same_weights(tmp_path):
    ("""A training process killed (SIGKILL) after a step checkpoint, then resumed, ends where an uninterrupted """
     """run ends.""")
    from safetensors.torch import load_file

    base, other = save_pair(tmp_path)
    en, fr = write_domains(tmp_path, repeat=12)
    steps = 120

    def argv(out):
        return ["train", "--base", str(base), "--expert", f"fr={other}", "--train", f"base={en}", "--train",
                f"fr={fr}", "--out", str(out), "--batch-size", "4", "--block-size", "16", "--max-steps", str(steps),
                "--variant", "2d", "--ae-layers", "1", "--save-every", "3"]

    killed = tmp_path / "killed"
    saved_step = kill_at_first_checkpoint(argv(killed), killed)
    assert 0 < saved_step < steps and not (killed / "superposed.safetensors").exists()
    assert main(argv(killed) + ["--resume"]) == 0
    assert main(argv(tmp_path / "whole")) == 0
    resumed = load_file(str(killed / "superposed.safetensors"))
    whole = load_file(str(tmp_path / "whole" / "superposed.safetensors"))
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0)
    history = json.loads((killed / "run.json").read_text())["history"]
    assert history == json.loads((tmp_path / "whole" / "run.json").read_text())["history"]
