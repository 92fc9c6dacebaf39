"""Tiny end-to-end build of a base model, its French expert and an added German one from synthetic sentences."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from superpose.data.text import tokenize_blocks
from superpose.demo.tiny_experts import ExpertRecipe, build_experts, finetune_expert, held_out_ppl, train_tokenizer

EN_SUBJECTS = ["The cat", "My brother", "The old man", "A young girl", "The teacher", "Our neighbour"]
EN_VERBS = ["walks to", "looks at", "runs towards", "sings near", "waits by", "paints"]
EN_OBJECTS = ["the river", "the small house", "the green garden", "the market", "the church", "the long road"]
FR_SUBJECTS = ["Le chat", "Mon frère", "Le vieil homme", "Une jeune fille", "L'élève", "Notre voisine"]
FR_VERBS = ["marche vers", "regarde", "court jusqu'à", "chante près de", "attend à côté de", "peint"]
FR_OBJECTS = ["la rivière", "la petite maison", "le jardin vert", "l'église", "le marché", "la forêt âgée"]
DE_SUBJECTS = ["Die Katze", "Mein Bruder", "Der alte Mann", "Ein junges Mädchen", "Der Lehrer", "Unsere Nachbarin"]
DE_VERBS = ["geht zu", "schaut auf", "läuft über", "singt neben", "wartet an", "malt"]
DE_OBJECTS = ["dem Fluss", "das kleine Haus", "den grünen Garten", "dem Markt", "die Kirche", "die lange Straße"]


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
        "de": sentences(DE_SUBJECTS, DE_VERBS, DE_OBJECTS, 60, seed=3),
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
    for text in ["The cat walks to the river.", "  L'élève court jusqu'à la forêt âgée, où ça ? Ça va !\n",
                 "naïve cœur ÉTÉ"]:
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


def weights(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    """A private copy of the built folder, so adding experts leaves the shared fixture untouched."""
    return Path(shutil.copytree(built[0], tmp_path / "experts"))


def test_finetune_expert_adds_an_expert(built_copy, corpora) -> None:
    before = json.loads((built_copy / "recipe.json").read_text())
    path = finetune_expert(built_copy / "base", corpora["de"], built_copy, tiny_recipe(), "de", progress=False)
    assert path == built_copy / "de" and (path / "model.safetensors").is_file()
    assert (AutoTokenizer.from_pretrained(path).get_vocab()
            == AutoTokenizer.from_pretrained(built_copy / "base").get_vocab())
    base, expert = weights(built_copy / "base"), weights(path)
    assert any(not torch.equal(base[key], expert[key]) for key in base)
    report = json.loads((built_copy / "recipe.json").read_text())
    assert report["train"]["de"]["steps"] == 30
    assert report["train"]["de"]["loss_last"] < report["train"]["de"]["loss_first"]
    assert report["blocks"]["de"] > 0
    for key in ("recipe", "expert_name", "n_params", "tokenizer_vocab", "wall_time_s"):
        assert report[key] == before[key]
    for section in ("train", "blocks"):
        assert {k: v for k, v in report[section].items() if k != "de"} == before[section]


def test_finetune_expert_matches_build_experts(built, built_copy, corpora) -> None:
    """Same texts and recipe from the saved base: the very weights build_experts gave its expert."""
    path = finetune_expert(built_copy / "base", corpora["fr"], built_copy, tiny_recipe(), "fr_again", progress=False)
    first, second = weights(built[1]["fr"]), weights(path)
    assert [key for key in first if not torch.equal(first[key], second[key])] == []


@pytest.mark.parametrize("name", ["base", "", "..", "de/x", "de\\x"])
def test_finetune_expert_bad_name_raises(built_copy, corpora, name) -> None:
    with pytest.raises(ValueError, match="plain folder name"):
        finetune_expert(built_copy / "base", corpora["de"], built_copy, tiny_recipe(), name, progress=False)
    assert sorted(p.name for p in built_copy.iterdir()) == ["base", "fr", "recipe.json"]


def test_finetune_expert_refuses_other_recipe(built_copy, corpora) -> None:
    with pytest.raises(ValueError, match="different recipe"):
        finetune_expert(built_copy / "base", corpora["de"], built_copy, tiny_recipe(finetune_steps=5), "de",
                        progress=False)
    assert not (built_copy / "de").exists()


@pytest.mark.parametrize(
    "overrides",
    [{"n_head": 3}, {"n_layer": 0}, {"batch_size": -1}, {"vocab_size": 200}, {"base_steps": 1.5}, {"lr": 0.0}],
)
def test_bad_recipe_raises(overrides) -> None:
    with pytest.raises(ValueError):
        tiny_recipe(**overrides)
