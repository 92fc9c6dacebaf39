"""Each adapter, run layer by layer, must reproduce its model's own forward pass.

This is what entitles a family to a place in `superpose.model.architecture.ADAPTERS`: the superposed
model only ever runs a stack through its adapter, so a wrong mask, position or rotary embedding
here would silently change every blend.
"""
import pytest
import torch
from helpers import ARCHS, VOCAB, tiny_model

from superpose.model.architecture import adapter_for

LENGTH = 20  # longer than Mistral's sliding window of 8 in tests/helpers.py, so the window is exercised
LAYERS = 3  # a first, a middle and a last layer


def _inputs(padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (2, LENGTH), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 13:] = 0  # right padding on the second row
    return ids, mask


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("padded", [False, True], ids=["full", "right-padded"])
def test_run_stack_equals_the_models_own_hidden_states(arch, padded):
    model = tiny_model(arch, layers=LAYERS)
    if arch == "mistral":
        assert model.config.sliding_window < LENGTH, "the sliding window must be shorter than the sequence"
    adapter = adapter_for(model)
    ids, mask = _inputs(padded)
    last_layer_out = []  # transformers ties hidden_states[-1] to the final-normed state; catch the raw one
    hook = adapter.layers[-1].register_forward_hook(
        lambda _m, _a, out: last_layer_out.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        reference = model(ids, attention_mask=mask, output_hidden_states=True)
        hook.remove()
        states = adapter.run_stack(ids, mask)
        positions = torch.arange(LENGTH).unsqueeze(0)  # (1, T)
        embeds = adapter.embed(ids, positions)  # (B, T, d)
        normed_last = adapter.final_norm(states[-1])
        logits = adapter.logits(states[-1])  # (B, T, V)
    hidden = reference.hidden_states  # embeddings, layers 0..L-2, then the last layer after the final norm
    assert len(hidden) == LAYERS + 1 and len(states) == LAYERS
    _close(embeds, hidden[0], "embeddings")
    for index in range(LAYERS - 1):
        _close(states[index], hidden[index + 1], f"layer {index}")
    _close(states[-1], last_layer_out[0], "last layer (before the final norm)")
    _close(normed_last, hidden[-1], "last layer through the final norm")
    _close(logits, reference.logits, "logits")
