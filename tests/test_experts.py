"""Tiny end-to-end build of a base model and its French expert from synthetic sentences."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from superpose.data import tokenize_blocks
from superpose.experts import ExpertRecipe, build_experts, held_out_ppl, train_tokenizer

EN_SUBJECTS = ["The cat", "My brother", "The old man", "A young girl", "The teacher", "Our neighbour"]
EN_VERBS = ["walks to", "looks at", "runs towards", "sings near", "waits by", "paints"]
EN_OBJECTS = ["the river", "the small house", "the green garden", "the market", "the church", "the long road"]
FR_SUBJECTS = ["Le chat", "Mon frère", "Le vieil homme", "Une jeune fille", "L'élève", "Notre voisine"]
FR_VERBS = ["marche vers", "regarde", "court jusqu'à", "chante près de", "attend à côté de", "peint"]
FR_OBJECTS = ["la rivière", "la petite maison", "le jardin vert", "l'église", "le marché", "la forêt âgée"]


def sentences(subjects: list[str], verbs: list[str], objects: list[str], n: int, seed: int) -> list[str]:
    """Template sentences: enough regularity for a 2-layer model to learn something in 30 steps."""
    rng = random.Random(seed)
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(n)]


def tiny_recipe(**overrides) -> ExpertRecipe:
    values = dict(n_layer=2, n_embd=32, n_head=2, block_size=32, vocab_size=300, base_steps=30, finetune_steps=30,
                  batch_size=8, lr=5e-3, finetune_lr=3e-3, seed=1)
    values.update(overrides)
    return ExpertRecipe(**values)


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[str]]:
    return {
        "en": sentences(EN_SUBJECTS, EN_VERBS, EN_OBJECTS, 60, seed=0),
        "fr": sentences(FR_SUBJECTS, FR_VERBS, FR_OBJECTS, 60, seed=1),
        "fr_valid": sentences(FR_SUBJECTS, FR_VERBS, FR_OBJECTS, 20, seed=2),
    }


@pytest.fixture(scope="module")
def built(corpora, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("experts")
    return out, build_experts(corpora["en"], corpora["fr"], out, tiny_recipe(), progress=False)


def test_build_writes_loadable_folders(built) -> None:
    out, paths = built
    assert set(paths) == {"base", "fr"}
    for path in paths.values():
        assert (path / "model.safetensors").is_file()
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
        for config in (model.config, model.generation_config):
            assert config.eos_token_id == config.bos_token_id == config.pad_token_id == tokenizer.eos_token_id
        assert model.config.vocab_size == len(tokenizer)
    report = json.loads((out / "recipe.json").read_text())
    assert report["recipe"]["n_layer"] == 2
    assert report["train"]["base"]["steps"] == 30 and report["wall_time_s"] > 0


def test_tokenizer_round_trips(built) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built[1]["base"])
    for text in ["The cat walks to the river.", "  L'élève court jusqu'à la forêt âgée, où ça ? Ça va !\n", "naïve cœur ÉTÉ"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_tokenizer_is_deterministic(corpora) -> None:
    texts = corpora["en"] + corpora["fr"]
    assert train_tokenizer(texts, vocab_size=300).get_vocab() == train_tokenizer(texts, vocab_size=300).get_vocab()


def test_base_loss_goes_down(built) -> None:
    losses = json.loads((built[0] / "recipe.json").read_text())["train"]["base"]
    assert losses["loss_last"] < losses["loss_first"] - 1.0


def test_expert_beats_base_on_french(built, corpora) -> None:
    paths = built[1]
    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    blocks = tokenize_blocks(corpora["fr_valid"], tokenizer, block_size=32)
    base = held_out_ppl(AutoModelForCausalLM.from_pretrained(paths["base"]), blocks, batch_size=8)
    expert = held_out_ppl(AutoModelForCausalLM.from_pretrained(paths["fr"]), blocks, batch_size=8)
    assert expert < base


def test_rebuild_is_reproducible(built, corpora, tmp_path) -> None:
    again = build_experts(corpora["en"], corpora["fr"], tmp_path, tiny_recipe(), progress=False)
    for name in ("base", "fr"):
        first = AutoModelForCausalLM.from_pretrained(built[1][name]).state_dict()
        second = AutoModelForCausalLM.from_pretrained(again[name]).state_dict()
        differing = [key for key in first if not torch.equal(first[key], second[key])]
        assert differing == [], f"{name}: rebuilt weights differ in {differing}"


@pytest.mark.parametrize(
    "overrides",
    [{"n_head": 3}, {"n_layer": 0}, {"batch_size": -1}, {"vocab_size": 200}, {"base_steps": 1.5}, {"lr": 0.0}],
)
def test_bad_recipe_raises(overrides) -> None:
    with pytest.raises(ValueError):
        tiny_recipe(**overrides)
