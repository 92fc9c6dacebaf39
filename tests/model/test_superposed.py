
import pytest
import torch
from helpers import ARCHS, VOCAB, char_tokenizer, paper_model, tiny_pair
from transformers import pipeline

from superpose.model.superposed import WEIGHTS_NAME, SuperposedModel


def _inputs(batch=2, length=12, seed=3, pad_row=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if pad_row:
        mask[-1, length - 4:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("padded", [False, True])
def test_alpha_zero_equals_base_and_alpha_one_equals_expert(arch, padded):
    base, expert = tiny_pair(arch)
    snapshot = {k: v.clone() for k, v in base.state_dict().items()}
    ids, mask = _inputs(pad_row=padded)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[], embed_blend="base", head="base"))
    assert all(torch.equal(snapshot[k], v) for k, v in base.state_dict().items()), "construction touched the base"
    model.blend.spline.set_constant(0.0)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, base(ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)
        model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[], embed_blend="mean_weights",
                                                                        head="first_expert"))
        model.blend.spline.set_constant(1.0)
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expert(ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_2d_alpha_one_equals_expert(arch):
    base, expert = tiny_pair(arch)
    model = SuperposedModel.from_models(base, expert, paper_model(variant="2d", ae_layers=[],
                                                                    embed_blend="mean_weights", head="first_expert"))
    model.blend.spline.set_constant(1.0)
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expert(ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)


def _future_leak(model, t=5):
    ids, _ = _inputs(batch=1, length=12, pad_row=False)
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % VOCAB
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    return (a[:, : t + 1] - b[:, : t + 1]).abs().max().item()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_causal_by_default_and_symmetric_padding_leaks(arch, variant):
    base, expert = tiny_pair(arch)
    model = SuperposedModel.from_models(base, expert, paper_model(variant=variant, ae_layers=[0, 1])).eval()
    assert _future_leak(model) == 0.0
    with pytest.warns(UserWarning, match="leaks|next token"):
        leaky = SuperposedModel.from_models(base, expert, paper_model(variant=variant, ae_layers=[0, 1],
                                                                        conv_padding="symmetric"))
    leaky.load_state_dict(model.state_dict())
    assert _future_leak(leaky.eval()) > 1e-4  # the reference's convolution reads position t+1


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_cached_generation_equals_uncached(arch, variant):
    base, expert = tiny_pair(arch)
    model = SuperposedModel.from_models(base, expert, paper_model(variant=variant, ae_layers=[0, 1])).eval()
    ids, _ = _inputs(batch=1, length=6, pad_row=False)
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True,
                                return_dict_in_generate=True, output_logits=True)
        uncached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False,
                                  return_dict_in_generate=True, output_logits=True)
        assert type(cached.cache).__name__ == "SuperposedCache"
        assert torch.equal(cached.sequences, uncached.sequences)
        for a, b in zip(cached.logits, uncached.logits):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        # and the cached last-step logits equal one full forward over the whole sequence
        full = model(cached.sequences).logits
        torch.testing.assert_close(cached.logits[-1], full[:, -2], atol=1e-4, rtol=0)


def test_left_padded_batch_matches_single_sequences():
    base, expert = tiny_pair("llama")
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[0, 1])).eval()
    short = torch.tensor([[5, 6, 7]])
    long = torch.tensor([[9, 10, 11, 12, 13]])
    batch = torch.tensor([[0, 0, 5, 6, 7], [9, 10, 11, 12, 13]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        together = model(batch, attention_mask=mask, position_ids=position_ids).logits
        torch.testing.assert_close(together[0, 2:], model(short).logits[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(together[1], model(long).logits[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_save_load_round_trip_writes_only_trained_weights(tmp_path, variant):
    base, expert = tiny_pair("gpt2")
    base.save_pretrained(tmp_path / "base")
    expert.save_pretrained(tmp_path / "expert")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(variant=variant), str(tmp_path / "base"),
                                        {"fr": str(tmp_path / "expert")}).eval()
    with torch.no_grad():
        model.blend.spline.control.add_(0.05)  # trained-looking, not the init
    model.save_pretrained(tmp_path / "run")
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["config.json", WEIGHTS_NAME]
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "run" / WEIGHTS_NAME))
    assert all(k.startswith(("blend.", "autoencoders.")) for k in saved)
    assert sum(v.numel() for v in saved.values()) < sum(p.numel() for p in base.parameters())
    loaded = SuperposedModel.from_pretrained(tmp_path / "run").eval()
    assert loaded.config.experts == {"fr": str(tmp_path / "expert")}
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                                   atol=0, rtol=0)


def test_a_run_saved_without_newer_settings_loads_with_the_values_it_was_trained_with(tmp_path):
    """A config.json written before a setting existed lacks its key; the run was trained with that day's default,
    the paper's value, so loading fills it from there and not from today's defaults (the dynamic preset's)."""
    import json

    base, expert = tiny_pair("gpt2")
    base.save_pretrained(tmp_path / "base")
    expert.save_pretrained(tmp_path / "expert")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(), str(tmp_path / "base"),
                                        {"fr": str(tmp_path / "expert")}).eval()
    with torch.no_grad():
        model.blend.spline.control.add_(0.05)
    model.save_pretrained(tmp_path / "run")
    config_file = tmp_path / "run" / "config.json"
    config = json.loads(config_file.read_text())
    config["settings"] = {"variant": "1d"}  # no ae_layers, head, gate, gate_hidden, gate_evidence, graph, ...
    config_file.write_text(json.dumps(config))
    loaded = SuperposedModel.from_pretrained(tmp_path / "run").eval()
    assert loaded.settings == model.settings == paper_model()
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                                   atol=0, rtol=0)


def test_pipeline_accepts_the_model():
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, expert, paper_model()).eval()
    generator = pipeline("text-generation", model=model, tokenizer=char_tokenizer())
    out = generator("the cat", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("the cat")


def test_labels_give_the_mean_next_token_loss():
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, expert, paper_model()).eval()
    ids, mask = _inputs()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, VOCAB)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_each_stack_runs_each_block_exactly_once_per_forward(arch):
    base, expert = tiny_pair(arch)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[0, 1])).eval()
    calls = []
    for name, _stack in (("base", base), ("expert", expert)):
        for index, layer in enumerate(model.stacks[0 if name == "base" else 1].layers):
            layer.register_forward_hook(lambda *_, key=(name, index): calls.append(key))
    ids, mask = _inputs()
    with torch.no_grad():
        model(ids, attention_mask=mask)
    assert sorted(calls) == sorted((name, i) for name in ("base", "expert") for i in range(2))


def test_auto_model_loads_a_saved_run(tmp_path):
    from transformers import AutoModelForCausalLM
    base, expert = tiny_pair("gpt2")
    base.save_pretrained(tmp_path / "base")
    expert.save_pretrained(tmp_path / "expert")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(), str(tmp_path / "base"),
                                        {"fr": str(tmp_path / "expert")})
    model.save_pretrained(tmp_path / "run")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert isinstance(loaded, SuperposedModel)
    ids, _ = _inputs(pad_row=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, atol=0, rtol=0)


def test_incremental_forward_with_cache_or_past_key_values_equals_full_forward():
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[0, 1])).eval()
    ids, _ = _inputs(batch=1, length=12, pad_row=False)
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :9], use_cache=True)
        for name in ("cache", "past_key_values"):  # the transformers 4.x name still works
            cache = model(ids[:, :9], use_cache=True).cache
            rest = model(ids[:, 9:], use_cache=True, **{name: cache}).logits
            torch.testing.assert_close(rest, full[:, 9:], atol=1e-5, rtol=0)
        assert first.cache.get_seq_length() == 9


def test_a_run_saved_with_the_old_names_still_loads_and_scores_the_same(tmp_path):
    """Runs from the two-model days: spline weights under `blend.alpha.`, `head: expert`, `embed_blend: mean_alpha`."""
    import json

    from safetensors.torch import load_file, save_file

    base, expert = tiny_pair("gpt2")
    base.save_pretrained(tmp_path / "base")
    expert.save_pretrained(tmp_path / "expert")
    model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(head="first_expert", ae_layers=[1]),
                                        str(tmp_path / "base"), {"fr": str(tmp_path / "expert")}).eval()
    with torch.no_grad():
        model.blend.spline.control.add_(0.1)
    model.save_pretrained(tmp_path / "run")
    weights = tmp_path / "run" / WEIGHTS_NAME
    old = {k.replace("blend.spline.", "blend.alpha."): v for k, v in load_file(str(weights)).items()}
    assert any(k.startswith("blend.alpha.") for k in old)
    save_file(old, str(weights))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["settings"].update(head="expert", embed_blend="mean_alpha")
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.warns(FutureWarning, match="head: expert is deprecated"):
        loaded = SuperposedModel.from_pretrained(tmp_path / "run").eval()
    assert (loaded.settings.head, loaded.settings.embed_blend) == ("first_expert", "mean_weights")
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


def test_old_keyword_arguments_still_work_with_a_notice(tmp_path):
    base, expert = tiny_pair("gpt2")
    with pytest.warns(FutureWarning, match="expert_name_or_path= is deprecated"):
        model = SuperposedModel.from_models(base, expert, paper_model(), "b", expert_name="fr",
                                            expert_name_or_path="./fr")
    assert model.config.experts == {"fr": "./fr"} and model.stack_names == ["base", "fr"]
    with pytest.raises(TypeError, match="unexpected keyword"):
        SuperposedModel.from_models(base, expert, paper_model(), "b", expert_nmae="fr")


def test_the_old_positional_form_names_the_one_expert(tmp_path):
    base, expert = tiny_pair("gpt2")
    with pytest.warns(FutureWarning):
        model = SuperposedModel.from_models(base, expert, paper_model(), "b", "fr", "./fr")
    assert model.config.experts == {"fr": "./fr"}
