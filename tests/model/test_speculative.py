"""Speculative superposition (issue 15): the dense model's output, exactly, from drafts of one stack.

Greedy speculative decoding must give dense greedy decoding's tokens; sampling must give the dense
distribution; a rejected draft must leave no trace in any cache (KV, evidence, convolution history).
The models are tiny random stacks with large weights and randomised gates and autoencoders, so the
heaviest stack's drafts are often wrong: every test checks that rejections happened.
"""
import copy

import pytest
import torch

from superpose.core.settings import ModelSettings
from superpose.model.speculative import (
    DecodingRules, DraftLength, SpeculationStats, SpeculativeDecoder, acceptance_probability, residual,
)
from superpose.model.superposed import SuperposedModel

from helpers import tiny_model

PROMPT = [5, 17, 33, 8, 61, 12, 40]
NOISE = 0.3  # how far the experts are from the base
SHORT = [5, 17]  # little evidence yet: the drafter's distribution is far from the dense one

SETTINGS = {
    # the dynamic preset's shape: parallel graph, evidence-reading token gate, mixture head
    "dynamic": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share", gate_hidden=8,
                    ae_layers=[]),
    # the same gate starting from the rate mixture (more evidence state to roll back: each filter's likelihood)
    "dynamic-mix": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share_mix",
                        gate_hidden=8, ae_layers=[]),
    # the same with residual autoencoders after both layers (convolution state to roll back)
    "dynamic+ae": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share", gate_hidden=8,
                       ae_layers=[0, 1], ae_residual=True),
    # the sequential graph: shared running state, evidence at every layer, an autoencoder
    "sequential": dict(graph="sequential", head="mixture", gate="token", gate_evidence="fixed_share",
                       ae_layers=[1], ae_residual=True),
    # the paper's static blend (no single stack's output: drafts are rarely kept)
    "paper": dict(variant="1d", ae_layers=[0, 1]),
}


def _fine_tune(base, seed: int, scale: float):
    """An 'expert' close to the base, as a fine-tune is: its weights moved by noise of `scale` x 0.5 (init)."""
    expert = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in expert.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.5 * scale)
    return expert


def _model(arch: str, stacks: int, preset: str, seed: int = 0, scale: float = NOISE) -> SuperposedModel:
    base = tiny_model(arch, 0, init=0.5)
    experts = {f"e{i}": _fine_tune(base, i, scale) for i in range(1, stacks)}
    torch.manual_seed(seed)
    model = SuperposedModel.from_models(base, experts, ModelSettings(**SETTINGS[preset])).eval()
    with torch.no_grad():  # trained-looking parts: gates that read the state, autoencoders that change it
        for name, param in model.named_parameters():
            if name.startswith("blend.gate.nets") or (name.startswith("autoencoders.") and param.dim() > 1):
                param.normal_(0.0, 0.3 if name.startswith("blend.") else 0.03)
    return model


def _generate(model, speculative, prompt=PROMPT, **options):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0, speculative=speculative,
                             **options)
    return out, model.speculation_stats


# (architecture, stacks, settings, expert noise): the noise is chosen per case so that the heaviest stack's drafts
# are kept often but not always (the test checks both)
CASES = [("gpt2", 2, "dynamic", 0.15), ("llama", 2, "dynamic", 0.15), ("gpt2", 3, "dynamic", 0.3),
         ("llama", 3, "dynamic", 0.3), ("gpt2", 2, "dynamic+ae", 0.3), ("llama", 3, "dynamic+ae", 0.3),
         ("gpt2", 2, "sequential", 0.3), ("llama", 3, "sequential", 0.15), ("gpt2", 2, "paper", 0.3),
         ("gpt2", 3, "dynamic-mix", 0.3), ("llama", 2, "dynamic-mix", 0.6)]


@pytest.mark.parametrize(("arch", "stacks", "preset", "noise"), CASES)
@pytest.mark.parametrize("draft", [3, "auto"])
def test_speculative_greedy_equals_dense_greedy(arch, stacks, preset, noise, draft):
    """Token for token, with rejections along the way (and for `auto`, whatever back-off it chooses)."""
    model = _model(arch, stacks, preset, scale=noise)
    options = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False)
    dense, dense_stats = _generate(model, 0, **options)
    fast, stats = _generate(model, draft, **options)
    assert dense_stats.mode == "dense" and stats.mode == "speculative"
    assert fast.tolist() == dense.tolist()
    assert stats.new_tokens == 40
    assert stats.drafted > stats.accepted, stats  # some drafts rejected
    assert stats.accepted > 0 or preset == "paper", stats  # and some kept (a static blend's rarely are)


def _continue_densely(model, decoder: SpeculativeDecoder) -> torch.Tensor:
    """The next-token logits from the decoder's cache (its pending token fed), as a dense cached step does."""
    with torch.no_grad():
        return model(torch.tensor([decoder.tokens[-1:]]), cache=decoder.cache, use_cache=True).logits[0, -1]


@pytest.mark.parametrize(("arch", "stacks", "preset", "noise"), [CASES[0], CASES[5], CASES[6], CASES[7]])
def test_rollback_leaves_the_caches_as_dense_decoding_would(arch, stacks, preset, noise):
    """After rounds with rejections, every cache (KV, evidence, convolution history) continues exactly as a
    whole-sequence forward over the same tokens."""
    model = _model(arch, stacks, preset, scale=noise)
    rules = DecodingRules(do_sample=False, eos=())
    stats = SpeculationStats()
    decoder = SpeculativeDecoder(model, PROMPT, rules, DraftLength(4), stats)
    decoder.run(20)
    assert stats.drafted > stats.accepted, stats
    assert decoder.cache.get_seq_length() == len(decoder.tokens) - 1  # all but the pending token
    step = _continue_densely(model, decoder)
    with torch.no_grad():
        whole = model(torch.tensor([decoder.tokens])).logits[0, -1]
        dense_cache = model.new_cache()
        model(torch.tensor([decoder.tokens]), cache=dense_cache, use_cache=True)  # the step fed the pending token
    torch.testing.assert_close(step, whole, atol=1e-4, rtol=0)
    for source, state in dense_cache.evidence.items():
        for name, tensor in state.items():
            torch.testing.assert_close(decoder.cache.evidence[source][name].float(), tensor.float(), atol=1e-4,
                                       rtol=0, msg=f"evidence {source} {name}")
    for layer, state in dense_cache.conv_states.items():
        for name, tensor in state.items():
            torch.testing.assert_close(decoder.cache.conv_states[layer][name], tensor, atol=1e-4, rtol=0)


def _first_token_distribution(model, rules: DecodingRules) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense model's processed next-token distribution after SHORT, and the heaviest stack's draft
    distribution there (as the decoder's first draft sees it)."""
    decoder = SpeculativeDecoder(model, SHORT, rules, DraftLength(1), SpeculationStats())
    with torch.no_grad():
        decoder._prefill()
        dense = model(torch.tensor([SHORT])).logits[0, -1:]
        drafted, draft_scores, drafter_out = decoder._draft(1)
    p = torch.softmax(rules.scores(dense, 0).double(), dim=-1)[0]
    q = torch.softmax(draft_scores.double(), dim=-1)[0]
    return p, q


FAR = 1.0  # experts far from the base: the drafter's distribution differs from the dense one
SAMPLING = [dict(), dict(temperature=0.7, top_k=20), dict(temperature=1.3, top_p=0.8)]


def _rules(**options) -> DecodingRules:
    from superpose.model.speculative import _plan

    model = _model("gpt2", 2, "dynamic")
    _, _, rules = _plan(model, (torch.tensor([SHORT]),), dict(do_sample=True, max_new_tokens=2, **options), None)
    return rules


@pytest.mark.parametrize("options", SAMPLING, ids=["plain", "temp-topk", "temp-topp"])
def test_one_speculative_sampling_step_has_the_dense_distribution_exactly(options):
    """Enumerated over every token the drafter can draw: accept y with min(1, p/q), else draw from the residual.
    The result is the dense p, while the drafter's q differs from it."""
    model = _model("gpt2", 2, "dynamic", scale=FAR)
    rules = _rules(**options)
    p, q = _first_token_distribution(model, rules)
    assert (p - q).abs().sum() > 0.1  # the drafter alone is a different model
    out = torch.zeros_like(p)
    for y in torch.nonzero(q > 0).flatten().tolist():
        keep = acceptance_probability(p, q, y)
        out[y] += q[y] * keep
        out += q[y] * (1 - keep) * residual(p, q)
    torch.testing.assert_close(out, p, atol=1e-9, rtol=0)


def test_sampled_first_tokens_follow_the_dense_distribution():
    """Many seeds: the first two generated tokens' empirical frequencies match the dense model's exact joint
    distribution (total variation below 0.1 with 500 draws; the broken variant that outputs the drafter's tokens scores > 0.2)."""
    model = _model("gpt2", 2, "dynamic", scale=FAR)
    options = dict(do_sample=True, max_new_tokens=2, temperature=0.6, top_k=3)
    rules = _rules(temperature=0.6, top_k=3)
    with torch.no_grad():
        p1 = torch.softmax(rules.scores(model(torch.tensor([SHORT])).logits[0, -1:], 0).double(), -1)[0]
        exact = {}
        for first in torch.nonzero(p1 > 0).flatten().tolist():
            logits = model(torch.tensor([SHORT + [first]])).logits[0, -1:]
            p2 = torch.softmax(rules.scores(logits, 1).double(), -1)[0]
            for second in torch.nonzero(p2 > 0).flatten().tolist():
                exact[(first, second)] = float(p1[first] * p2[second])
    draws = 500
    counts: dict = {}
    drafted = accepted = 0
    for seed in range(draws):
        torch.manual_seed(seed)
        out, stats = _generate(model, 1, SHORT, **options)
        key = tuple(out[0, len(SHORT):].tolist())
        counts[key] = counts.get(key, 0) + 1
        drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    assert drafted > accepted > 0
    keys = set(exact) | set(counts)
    tv = 0.5 * sum(abs(counts.get(k, 0) / draws - exact.get(k, 0.0)) for k in keys)
    assert tv < 0.1, tv


def test_beams_and_batches_fall_back_to_dense_decoding():
    model = _model("gpt2", 2, "dynamic")
    ids = torch.tensor([SHORT, SHORT])
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert model.speculation_stats.mode == "dense" and "batch" in model.speculation_stats.reason
        model.generate(ids[:1], max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)
        assert model.speculation_stats.mode == "dense" and "num_beams" in model.speculation_stats.reason
    with pytest.raises(ValueError, match="speculative"):
        model.generate(ids[:1], max_new_tokens=3, speculative=-1)


def test_poor_drafts_back_off_to_dense_steps():
    """The paper's static blend: drafts are rarely kept, so most tokens come from dense steps."""
    model = _model("gpt2", 2, "paper")
    _, stats = _generate(model, "auto", max_new_tokens=60, min_new_tokens=60, do_sample=False)
    if stats.acceptance_rate < 0.4:
        assert stats.dense_tokens >= 30, stats


def test_cli_generate_speculative_flag_and_verbose(tmp_path, capsys):
    """`superpose generate --speculative K` prints the same text as `--speculative 0`; --verbose the speed."""
    from helpers import char_tokenizer, save_pair
    from superpose.cli.commands import main

    base_dir, expert_dir = save_pair(tmp_path)
    base, expert = (type(tiny_model()).from_pretrained(str(d)) for d in (base_dir, expert_dir))
    settings = ModelSettings(**SETTINGS["dynamic"])
    model = SuperposedModel.from_models(base, {"fr": expert}, settings, str(base_dir),
                                        expert_paths={"fr": str(expert_dir)})
    model.save_pretrained(tmp_path / "run")
    char_tokenizer().save_pretrained(tmp_path / "run")
    texts = []
    for k in ("0", "3", "auto"):
        main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "12",
              "--speculative", k, "--verbose"])
        out = capsys.readouterr()
        texts.append(out.out)
        assert "tokens/s" in out.err and "acceptance rate" in out.err
    assert texts[0] == texts[1] == texts[2]
