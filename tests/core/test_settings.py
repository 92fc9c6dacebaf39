"""Settings: YAML numbers, flags generated from the dataclasses, clear errors."""
import json
from dataclasses import fields

import pytest
from helpers import save_pair, write_domains

from superpose.cli.commands import build_parser, main
from superpose.core.settings import ModelSettings, SettingsError, TrainSettings

# Every flag name the command line had before flags were generated from the settings dataclasses.
EARLIER_FLAGS = ["--config", "--variant", "--ae-layers", "--bottleneck", "--conv-padding", "--embed-blend", "--head",
                 "--training-graph", "--epochs", "--max-steps", "--batch-size", "--block-size", "--seed", "--lr-blend",
                 "--lr-ae", "--max-train-blocks", "--max-valid-blocks", "--device"]


def _train_flags() -> dict[str, object]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {option: action for action in sub.choices["train"]._actions for option in action.option_strings}


def test_every_setting_has_a_train_flag_with_help_and_the_old_flags_remain():
    flags = _train_flags()
    for cls in (ModelSettings, TrainSettings):
        for f in fields(cls):
            action = flags["--" + f.name.replace("_", "-")]
            assert action.dest == f.name and action.help, f.name
            assert action.default is None  # unset flags must not override --config
    assert set(EARLIER_FLAGS) <= set(flags)
    assert flags["--variant"].choices == ("1d", "2d")
    assert flags["--lr-blend"].type is float and flags["--max-steps"].type is int


@pytest.mark.parametrize("cls, key, text, value", [
    (TrainSettings, "lr_blend", "2e-4", 2e-4), (TrainSettings, "epochs", "3", 3),
    (TrainSettings, "max_steps", "1e2", 100),
    (ModelSettings, "bottleneck", "0.5", 0.5), (ModelSettings, "ae_layers", "0, 2", [0, 2]),
])
def test_numeric_strings_are_accepted(cls, key, text, value):
    assert getattr(cls(**{key: text}), key) == value


@pytest.mark.parametrize("key, text, message", [("lr_blend", "fast", "lr_blend must be a number"),
                                                ("batch_size", "2.5", "batch_size must be an integer"),
                                                ("save_every", "0", "save_every must be a positive integer")])
def test_bad_numeric_values_name_the_setting(key, text, message):
    with pytest.raises(SettingsError, match=message):
        TrainSettings(**{key: text})


def test_yaml_exponent_numbers_reach_training(tmp_path, capsys):
    base, expert = save_pair(tmp_path)
    en, fr = write_domains(tmp_path)
    # YAML 1.1 reads 2e-4 (no dot) as a string; it must still be the number 2e-4
    (tmp_path / "run.yaml").write_text("lr_blend: 2e-4\nlr_ae: 1e-3\nbatch_size: 4\nblock_size: 16\nmax_steps: 2\n")
    argv = ["train", "--base", str(base), "--expert", f"fr={expert}", "--train", f"base={en}", "--train", f"fr={fr}",
            "--config", str(tmp_path / "run.yaml")]
    assert main(argv + ["--out", str(tmp_path / "run")]) == 0
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["train_settings"]
    assert recorded["lr_blend"] == 2e-4 and recorded["lr_ae"] == 1e-3 and recorded["batch_size"] == 4
    (tmp_path / "bad.yaml").write_text("lr_blend: quick\n")
    argv[-1] = str(tmp_path / "bad.yaml")
    assert main(argv + ["--out", str(tmp_path / "bad")]) == 2
    assert "lr_blend must be a number" in capsys.readouterr().err


def test_old_setting_names_and_values_still_work_with_a_notice():
    from superpose.core.settings import split_settings

    with pytest.warns(FutureWarning, match="lr_alpha is deprecated: use lr_blend"):
        model, train, _ = split_settings({"lr_alpha": 5e-3, "alpha_reg_weight": 0.2, "head": "expert",
                                          "embed_blend": "mean_alpha"})
    assert (train.lr_blend, train.blend_reg_weight) == (5e-3, 0.2)
    assert (model.head, model.embed_blend) == ("first_expert", "mean_weights")
    with pytest.raises(SettingsError, match="old name of lr_blend"):
        split_settings({"lr_alpha": 1e-3, "lr_blend": 2e-3})


def test_old_flag_still_sets_the_renamed_setting(capsys):
    from superpose.cli.commands import _settings_from, build_parser

    args = build_parser().parse_args(["train", "--base", "b", "--expert", "e", "--train", "x.txt", "--out", "o",
                                      "--lr-alpha", "0.003"])
    assert "--lr-alpha is deprecated" in capsys.readouterr().err
    _, train, _ = _settings_from(args)
    assert train.lr_blend == 0.003


def test_old_setting_value_passes_the_flag_and_is_upgraded(capsys):
    from superpose.cli.commands import _settings_from, build_parser

    args = build_parser().parse_args(["train", "--base", "b", "--expert", "e", "--train", "x.txt", "--out", "o",
                                      "--head", "expert"])
    with pytest.warns(FutureWarning, match="head: expert is deprecated"):
        model, _, _ = _settings_from(args)
    assert model.head == "first_expert"
