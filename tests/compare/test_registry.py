"""One registry: each method file declares its entry, and every default is derived from the list."""
import importlib
import pkgutil

import pytest
import torch
from helpers import paper_model, tiny_pair

import superpose.compare as compare
from superpose.compare import DEFAULT_BASELINES, METHODS, REGISTRY, WEIGHT_MERGES, parse_baselines
from superpose.compare import hard_merge as export
from superpose.compare.linear import linear
from superpose.model.superposed import SuperposedModel


def test_every_method_file_is_in_the_registry_and_nothing_else_is():
    declared = {}
    for info in pkgutil.iter_modules(compare.__path__):
        module = importlib.import_module(f"superpose.compare.{info.name}")
        if hasattr(module, "METHOD"):
            declared[info.name] = module.METHOD
    assert {name: method.name for name, method in declared.items()} == {name: name for name in declared}
    assert [m.name for m in METHODS] == list(REGISTRY)
    assert {id(m) for m in METHODS} == {id(m) for m in declared.values()}  # a file without its list entry shows


def test_defaults_derive_from_each_methods_declaration():
    defaults = parse_baselines(None)
    assert list(defaults) == [m.name for m in METHODS]
    for method in METHODS:
        assert defaults[method.name] == (list(method.sweep) if method.takes_parameter else [None])
    assert parse_baselines(DEFAULT_BASELINES) == defaults
    assert WEIGHT_MERGES == {"linear": (0.1, 0.3, 0.5, 0.7, 0.9), "task_arithmetic": (0.5, 1.0), "ties": (0.2, 0.5),
                             "dare": (0.5,), "slerp": (0.5,)}
    assert [m.name for m in METHODS if m.holds_model] == list(WEIGHT_MERGES)


def test_each_method_parses_its_own_points():
    assert parse_baselines(["ties:0.5@0.3", "dare:0.5", "linear:0.2"]) == {"ties": [(0.5, 0.3)], "dare": [0.5],
                                                                         "linear": [0.2]}
    for value in ("linear:0.5@1", "slerp:0.5@1", "ensemble:0.5@1", "fixed_share:0.1@2"):
        with pytest.raises(ValueError, match="must be numbers, got"):
            parse_baselines([value])


def test_the_hard_merge_export_is_the_linear_merge_when_every_weight_is_the_same(monkeypatch):
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, {"fr": expert},
                                        paper_model(ae_layers=[], embed_blend="mean_weights", head="blend"))
    layers = base.config.n_layer
    monkeypatch.setattr(export, "layer_weights", lambda m: [[0.75, 0.25]] * layers)
    merged = export.hard_merge_state_dict(model)
    expected = linear(base.state_dict(), expert.state_dict(), 0.25)
    assert merged.keys() == expected.keys()
    for key in expected:
        assert torch.equal(merged[key], expected[key]), key
