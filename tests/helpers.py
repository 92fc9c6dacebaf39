"""Tiny random-config models and a character tokenizer, built in-process (no network); the paper's settings."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from superpose import ModelSettings, TrainSettings, preset_settings

CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,'!?éèàçêôÉÈÀÇ")
VOCAB = 96
ARCHS = ("gpt2", "llama", "qwen2", "mistral")


def paper_model(**values) -> ModelSettings:
    """The paper preset's model settings with `values` changed (`ModelSettings()` is the dynamic preset)."""
    return replace(preset_settings("paper")[0], **values)


def paper_train(**values) -> TrainSettings:
    """The paper preset's training settings with `values` changed (`TrainSettings()` is the dynamic preset)."""
    return replace(preset_settings("paper")[1], **values)


def tiny_config(arch: str, layers: int = 2, init: float = 0.02):
    if arch == "gpt2":
        return GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=128,
                          bos_token_id=0, eos_token_id=0, initializer_range=init)
    common = dict(initializer_range=init, num_hidden_layers=layers, hidden_size=32, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=128,
                  bos_token_id=0, eos_token_id=0)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=8)  # shorter than the test sequences: the window matters
    return LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)


def tiny_model(arch: str = "gpt2", seed: int = 0, layers: int = 2, init: float = 0.02):
    torch.manual_seed(seed)
    cls = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM,
           "mistral": MistralForCausalLM}[arch]
    return cls(tiny_config(arch, layers, init)).eval()


def tiny_pair(arch: str = "gpt2", layers: int = 2, init: float = 0.02):
    """A base and an 'expert' that shares its shapes but not its weights."""
    return tiny_model(arch, 0, layers, init), tiny_model(arch, 1, layers, init)


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {c: i for i, c in enumerate(["<eos>"] + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def save_pair(tmp: Path, arch: str = "gpt2", layers: int = 2) -> tuple[Path, Path]:
    base, expert = tiny_pair(arch, layers)
    tokenizer = char_tokenizer()
    paths = []
    for name, model in (("base", base), ("expert", expert)):
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
        paths.append(tmp / name)
    return paths[0], paths[1]


ENGLISH = ["the cat sat on the mat", "a dog ran in the park", "we like to read books", "the sun is warm today",
           "my friend has a red car", "they walk to school"]
# Upper case keeps the two domains apart token by token, so a tiny model can tell them apart.
FRENCH = ["LE CHAT EST SUR LA TABLE", "UNE FILLE MANGE DU PAIN", "NOUS AIMONS LA MER", "IL FAIT BEAU À PARIS",
          "LES ENFANTS JOUENT DEHORS", "JE VAIS À L'ÉCOLE"]


def write_domains(tmp: Path, repeat: int = 8) -> tuple[Path, Path]:
    en, fr = tmp / "en.txt", tmp / "fr.txt"
    en.write_text("\n".join(ENGLISH * repeat), encoding="utf-8")
    fr.write_text("\n".join(FRENCH * repeat), encoding="utf-8")
    return en, fr


def assert_left_padded_batch_generates_as_each_prompt_alone(model, prompts: list[list[int]], use_cache: bool,
                                                           max_new_tokens: int = 8, pad: int = 0) -> None:
    """Greedy generation of a left-padded batch: each row's new tokens and logits equal its prompt's alone."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, T)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, T)
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache, pad_token_id=pad,
                   return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        together = model.generate(ids, attention_mask=mask, **options)
        for row, prompt in enumerate(prompts):
            alone = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                   **options)
            assert together.sequences[row, width:].tolist() == alone.sequences[0, len(prompt):].tolist(), row
            for a, b in zip(together.logits, alone.logits, strict=True):
                torch.testing.assert_close(a[row], b[0], atol=1e-4, rtol=0)


def kill_at_first_checkpoint(argv: list[str], folder: Path) -> int:
    """Run `python -m superpose ARGV` in its own process, SIGKILL it once `folder` holds a step checkpoint, and
    return that checkpoint's step (the run must not have finished by then)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from superpose.training.checkpoint import list_checkpoints

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-m", "superpose", *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list_checkpoints(folder) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return int(list_checkpoints(folder)[-1].name.split("-")[1])
