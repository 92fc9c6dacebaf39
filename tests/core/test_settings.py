"""Settings: one default (the dynamic preset), the paper preset pinned, Literal choices, YAML numbers, flags
generated from the dataclasses, clear errors."""
import json
import typing
from dataclasses import asdict, fields

import pytest
from helpers import save_pair, write_domains

from superpose import preset_settings
from superpose.cli.commands import build_parser, main, settings_from_args
from superpose.core.settings import DTYPES, SettingsError, field_choices
from superpose.model.settings import ModelSettings
from superpose.training.distill import DistillSettings
from superpose.training.presets import split_settings
from superpose.training.settings import LoopSettings, TrainSettings

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
    with pytest.warns(FutureWarning, match="lr_alpha is deprecated: use lr_blend"):
        model, train, _ = split_settings({"lr_alpha": 5e-3, "alpha_reg_weight": 0.2, "head": "expert",
                                          "embed_blend": "mean_alpha"})
    assert (train.lr_blend, train.blend_reg_weight) == (5e-3, 0.2)
    assert (model.head, model.embed_blend) == ("first_expert", "mean_weights")
    with pytest.raises(SettingsError, match="old name of lr_blend"):
        split_settings({"lr_alpha": 1e-3, "lr_blend": 2e-3})


def test_old_flag_still_sets_the_renamed_setting(capsys):
    args = build_parser().parse_args(["train", "--base", "b", "--expert", "e", "--train", "x.txt", "--out", "o",
                                      "--lr-alpha", "0.003"])
    assert "--lr-alpha is deprecated" in capsys.readouterr().err
    _, train, _ = settings_from_args(args)
    assert train.lr_blend == 0.003


def test_old_setting_value_passes_the_flag_and_is_upgraded(capsys):
    args = build_parser().parse_args(["train", "--base", "b", "--expert", "e", "--train", "x.txt", "--out", "o",
                                      "--head", "expert"])
    with pytest.warns(FutureWarning, match="head: expert is deprecated"):
        model, _, _ = settings_from_args(args)
    assert model.head == "first_expert"


# The paper preset as it was when the dataclass defaults were the paper's: `--preset paper` must not move.
PAPER_MODEL = {"variant": "1d", "ae_layers": None, "bottleneck": None, "conv_padding": "causal",
               "embed_blend": "mean_weights", "head": "base", "gate": "static", "gate_hidden": 0,
               "gate_evidence": "none", "evidence_rate": 0.02, "graph": "sequential", "ae_residual": False,
               "output_temperatures": [], "n_control_points": 16, "spline_degree": 3}
PAPER_TRAIN = {"epochs": 1, "max_steps": None, "batch_size": 32, "grad_accum": 1, "block_size": 128, "seed": 0,
               "weight_decay": 0.01, "grad_clip": 1.0, "switch_rate": 0.0, "max_train_blocks": None,
               "max_valid_blocks": 64, "save_every": None, "keep_checkpoints": 2, "device": None,
               "mixed_precision": None, "lr_blend": None, "lr_ae": 1e-4, "lr_gate": 1e-3, "recon_weight": None,
               "lm_weight": None, "blend_reg_weight": None, "gate_label_weight": 0.0, "load_balance_weight": 0.0,
               "training_graph": "sequential", "device_map": None, "dtype": "float32"}
# The dynamic preset, chosen on the real-text benchmark: the paper's values but these.
DYNAMIC = {"graph": "parallel", "head": "mixture", "gate": "token", "gate_evidence": "fixed_share_mix",
           "gate_hidden": 32, "ae_layers": [], "recon_weight": 0.0, "gate_label_weight": 0.1, "lr_gate": 1e-2,
           "switch_rate": 0.2, "output_temperatures": [0.9, 1.0, 1.25]}


def _train_args(*flags):
    return build_parser().parse_args(["train", "--base", "b", "--expert", "e", "--train", "x.txt", "--out", "o",
                                      *flags])


def test_the_paper_preset_keeps_its_values():
    model, train = preset_settings("paper")
    assert asdict(model) == PAPER_MODEL and asdict(train) == PAPER_TRAIN
    model, train, _ = settings_from_args(_train_args("--preset", "paper"))
    assert asdict(model) == PAPER_MODEL and asdict(train) == PAPER_TRAIN


def test_the_dataclass_defaults_the_command_line_and_the_dynamic_preset_agree(capsys):
    model, train = preset_settings("dynamic")
    assert ModelSettings() == model and TrainSettings() == train
    both = {**PAPER_MODEL, **PAPER_TRAIN, **DYNAMIC}
    assert asdict(model) == {k: both[k] for k in PAPER_MODEL} and asdict(train) == {k: both[k] for k in PAPER_TRAIN}
    assert settings_from_args(_train_args())[:2] == (ModelSettings(), TrainSettings())
    assert "default preset 'dynamic'" in capsys.readouterr().err
    assert split_settings({})[:2] == (ModelSettings(), TrainSettings())


def test_distill_switches_by_default_as_training_does():
    """A fifth of the blocks are code-switched by default in `distill` (chosen on the benchmark's selection
    halves) as in `train`; the loop's shared default stays 0 for anything else built on it."""
    assert DistillSettings().switch_rate == TrainSettings().switch_rate == 0.2
    assert LoopSettings().switch_rate == 0.0
    assert DistillSettings().teacher_weight == 0.2  # mostly the text, with the teacher's switching (measured)


def test_settings_saved_without_a_key_take_the_paper_value():
    """Runs saved before a setting existed were trained with that day's default, the paper's value."""
    assert ModelSettings.from_saved({}) == ModelSettings.from_saved(None) == preset_settings("paper")[0]
    assert ModelSettings.from_saved({"variant": "2d", "gate": "token"}) == ModelSettings(
        **{**PAPER_MODEL, "variant": "2d", "gate": "token"})
    assert ModelSettings.from_saved(asdict(ModelSettings())) == ModelSettings()


@pytest.mark.parametrize("cls, name, choices", [
    (ModelSettings, "variant", ("1d", "2d")), (ModelSettings, "conv_padding", ("causal", "symmetric")),
    (ModelSettings, "embed_blend", ("mean_weights", "base")),
    (ModelSettings, "head", ("base", "first_expert", "blend", "mixture")), (ModelSettings, "gate", ("static", "token")),
    (ModelSettings, "gate_evidence", ("none", "fixed_share", "fixed_share_mix")),
    (ModelSettings, "graph", ("sequential", "parallel")), (TrainSettings, "training_graph", ("sequential", "parallel")),
    (TrainSettings, "mixed_precision", ("no", "bf16")), (TrainSettings, "dtype", DTYPES),
    (DistillSettings, "dtype", DTYPES), (ModelSettings, "ae_layers", None), (TrainSettings, "device", None),
])
def test_choices_come_from_the_literal_types_for_checks_and_flags(cls, name, choices):
    assert field_choices(cls, name) == choices
    if choices is None:
        return
    assert typing.Literal in {typing.get_origin(a) for a in (typing.get_type_hints(cls)[name],
                                                             *typing.get_args(typing.get_type_hints(cls)[name]))}
    with pytest.raises(SettingsError, match=f"{name} must be one of {', '.join(choices)}; got 'nonsense'"):
        cls(**{name: "nonsense"})
    if cls is not DistillSettings:
        flag = _train_flags()["--" + name.replace("_", "-")]
        renamed = name in ("head", "embed_blend")  # old values pass the flag and are upgraded with a notice
        assert (flag.choices, flag.metavar) == ((None, "{" + ",".join(choices) + "}") if renamed else (choices, None))
