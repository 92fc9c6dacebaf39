"""Generation through `SuperposedCache`: beams, batch reshuffles and left padding.

The autoencoders' convolutions keep a history of the last inputs per row. Whenever generate()
reorders, repeats or drops rows of the KV caches, that history must follow, and padding must
never leak into it. Every test compares against a run that has no cache or no batch to get wrong.
"""
import pytest
import torch
from helpers import assert_left_padded_batch_generates_as_each_prompt_alone, paper_model, tiny_pair

from superpose.model.superposed import SuperposedModel

PAD = 0


def _model(arch: str, variant: str) -> SuperposedModel:
    base, expert = tiny_pair(arch, init=0.5)  # large weights: varied, context-dependent greedy tokens
    torch.manual_seed(0)
    model = SuperposedModel.from_models(base, expert, paper_model(variant=variant, ae_layers=[0, 1]))
    return model.eval()  # the 2d autoencoders have dropout


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_beam_search_with_cache_equals_without(arch, variant):
    """Beam search reorders the cache every step; the convolution history must be reordered with it."""
    model = _model(arch, variant)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    settings = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, num_beams=3,
                    num_return_sequences=2, return_dict_in_generate=True, output_scores=True, pad_token_id=PAD)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **settings)
        uncached = model.generate(ids, use_cache=False, **settings)
    assert type(cached.cache).__name__ == "SuperposedCache" and cached.cache.conv_states
    assert cached.sequences.shape[0] == 4
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=1e-4, rtol=0)
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_repeating_and_selecting_cache_rows_carries_the_convolution_history(variant):
    """batch_repeat_interleave / batch_select_indices on a filled cache, then decoding on, equals a full forward."""
    model = _model("gpt2", variant)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27]])  # (2, 8)
    prefix = 5
    with torch.no_grad():
        cache = model(ids[:, :prefix], use_cache=True).cache
        cache.batch_repeat_interleave(2)  # rows 0, 0, 1, 1
        repeated = ids.repeat_interleave(2, dim=0)  # (4, 8)
        step = model(repeated[:, prefix : prefix + 1], cache=cache, use_cache=True).logits
        torch.testing.assert_close(step, model(repeated[:, : prefix + 1]).logits[:, -1:], atol=1e-4, rtol=0)
        keep = torch.tensor([3, 0])  # the second prompt, then the first
        cache.batch_select_indices(keep)
        kept = repeated[keep]  # (2, 8)
        rest = model(kept[:, prefix + 1 :], cache=cache, use_cache=True).logits
        torch.testing.assert_close(rest, model(kept).logits[:, prefix + 1 :], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("arch", "variant"), [("gpt2", "1d"), ("gpt2", "2d"), ("llama", "1d")])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_left_padded_batch_generates_as_each_prompt_alone(arch, variant, use_cache):
    """Padding must shift neither positions (GPT-2's are absolute) nor the autoencoders' convolution input."""
    model = _model(arch, variant)
    assert_left_padded_batch_generates_as_each_prompt_alone(
        model, [[5, 6, 7], [9, 10, 11, 12, 13, 14], [20, 21, 22, 23]], use_cache)
