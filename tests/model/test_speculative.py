"""Speculative superposition: the dense model's output, exactly, from drafts of one stack.

Greedy speculative decoding must give dense greedy decoding's tokens; sampling must give the dense
distribution; a rejected draft must leave no trace in any cache (KV, evidence, convolution history).
The models are tiny random stacks with large weights and randomised gates and autoencoders, so the
heaviest stack's drafts are often wrong: every test checks that rejections happened.
"""
import copy

import pytest
import torch
from helpers import paper_model, tiny_model
from transformers import GenerationConfig, GenerationMixin, pipeline

from superpose.model.speculative import (
    DecodingRules,
    DraftLength,
    SpeculationStats,
    SpeculativeDecoder,
    accept_sampled,
)
from superpose.model.superposed import SuperposedModel

PROMPT = [5, 17, 33, 8, 61, 12, 40]
NOISE = 0.3  # how far the experts are from the base
SHORT = [5, 17]  # little evidence yet: the drafter's distribution is far from the dense one

SETTINGS = {
    # the dynamic preset's shape: parallel graph, evidence-reading token gate, mixture head, output temperatures
    "dynamic": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share", gate_hidden=8,
                    ae_layers=[], output_temperatures=[0.9, 1.0, 1.25]),
    # the same gate starting from the rate mixture (more evidence state to roll back: each filter's likelihood)
    "dynamic-mix": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share_mix",
                        gate_hidden=8, ae_layers=[]),
    # the same with residual autoencoders after both layers (convolution state to roll back)
    "dynamic+ae": dict(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share", gate_hidden=8,
                       ae_layers=[0, 1], ae_residual=True),
    # the sequential graph: shared running state, evidence at every layer, an autoencoder
    "sequential": dict(graph="sequential", head="mixture", gate="token", gate_evidence="fixed_share",
                       ae_layers=[1], ae_residual=True, output_temperatures=[0.9, 1.0, 1.25]),
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
    model = SuperposedModel.from_models(base, experts, paper_model(**SETTINGS[preset])).eval()
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
    rules = DecodingRules(do_sample=False)
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


def _prepared(model, prompt=SHORT, **options):
    """What transformers prepares for `model.generate(prompt, **options)`: its logits processors, stopping
    criteria and resolved generation config, captured through its public `custom_generate` hook."""
    seen = {}

    def capture(model, input_ids, logits_processor, stopping_criteria, generation_config, **_):
        seen.update(processors=logits_processor, stopping=stopping_criteria, config=generation_config)
        return input_ids

    GenerationMixin.generate(model, torch.tensor([prompt]), custom_generate=capture, **options)
    return seen


def _dense_distribution(model, processors, tokens: list[int]) -> torch.Tensor:
    """Dense decoding's next-token distribution after `tokens`, as transformers' sampling loop computes it."""
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[:, -1].float()
    return torch.softmax(processors(torch.tensor([tokens]), logits).double(), dim=-1)[0]


FAR = 1.0  # experts far from the base: the drafter's distribution differs from the dense one
SAMPLING = [dict(), dict(temperature=0.7, top_k=20), dict(temperature=1.3, top_p=0.8), dict(top_k=0, min_p=0.05),
            dict(top_k=0)]


@pytest.mark.parametrize("options", SAMPLING, ids=["defaults", "temp-topk", "temp-topp", "min-p", "no-topk"])
def test_one_speculative_sampling_step_has_the_dense_distribution_exactly(options):
    """The acceptance code, fed the decoder's draft and verify scores, gives transformers' processed dense
    distribution (its warpers, its defaults: top-k 50 when none is set), computed exactly: the acceptance
    threshold is found by bisection on the uniform draw, the replacement's distribution is the one drawn from."""
    model = _model("gpt2", 2, "dynamic", scale=FAR)
    prepared = _prepared(model, do_sample=True, max_new_tokens=2, **options)
    rules = DecodingRules(True, prepared["processors"], prepared["stopping"])
    p_ref = _dense_distribution(model, prepared["processors"], SHORT)
    decoder = SpeculativeDecoder(model, SHORT, rules, DraftLength(1), SpeculationStats())
    with torch.no_grad():
        decoder.prefill()
        _, draft_scores, drafter_out = decoder.draft(1)
        dense_logits, _, _ = decoder.verify([0], drafter_out)
    dense_scores = rules.scores(dense_logits, SHORT + [0], len(SHORT))
    q = torch.softmax(draft_scores.double(), dim=-1)[0]
    assert (p_ref - q).abs().sum() > 0.1  # the drafter alone is a different model
    out = torch.zeros_like(p_ref)
    for y in torch.nonzero(q > 0).flatten().tolist():
        low, high, replacement = 0.0, 1.0, None  # the code keeps y for u below a threshold: find it
        for step in range(61):
            u = 1.0 - 1e-15 if step == 0 else (low + high) / 2
            drawn = []
            kept, _ = accept_sampled(dense_scores, draft_scores, [y], lambda: u,
                                     lambda probs: drawn.append(probs) or 0)
            if kept == 1:
                low = u
                if step == 0:  # kept even at u -> 1: always kept
                    low = 1.0
                    break
            else:
                high, replacement = u, drawn[0]  # a rejection draws the replacement from this
        out[y] += q[y] * low
        if replacement is not None:
            out += q[y] * (1 - low) * replacement
    torch.testing.assert_close(out, p_ref, atol=1e-6, rtol=0)


def test_sampled_first_tokens_follow_the_dense_distribution():
    """Many seeds: the first two generated tokens' empirical frequencies match the dense model's exact joint
    distribution (total variation below 0.1 with 500 draws; the broken variant that outputs the drafter's
    tokens scores > 0.2)."""
    model = _model("gpt2", 2, "dynamic", scale=FAR)
    options = dict(do_sample=True, max_new_tokens=2, temperature=0.6, top_k=3)
    processors = _prepared(model, **options)["processors"]
    p1 = _dense_distribution(model, processors, SHORT)
    exact = {}
    for first in torch.nonzero(p1 > 0).flatten().tolist():
        p2 = _dense_distribution(model, processors, SHORT + [first])
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


def test_sampling_with_the_checkpoint_defaults_stays_in_the_dense_top_50():
    """do_sample=True and no top_k: transformers samples from the top 50 (of 96) tokens; so must speculation,
    at every drafted and verified position."""
    model = _model("gpt2", 2, "dynamic", scale=FAR)
    processors = _prepared(model, do_sample=True, max_new_tokens=6)["processors"]
    outside = total = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, stats = _generate(model, 3, SHORT, do_sample=True, max_new_tokens=6, min_new_tokens=6)
        assert stats.mode == "speculative"
        tokens = out[0].tolist()
        for t in range(len(SHORT), len(tokens)):
            p = _dense_distribution(model, processors, tokens[:t])
            outside += int(p[tokens[t]] == 0)
            total += 1
    assert total == 240 and outside == 0


def _both(model, prompt, draft="auto", **options):
    """(dense output, speculative output, speculative stats) of one greedy call, as a user makes it."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        dense = model.generate(ids, speculative=0, **options)
        fast = model.generate(ids, speculative=draft, **options)
    return dense, fast, model.speculation_stats


def test_default_length_is_twenty_new_tokens_as_transformers():
    """No length given: transformers generates 20 new tokens (not 20 minus the prompt)."""
    model = _model("gpt2", 2, "dynamic", scale=0.15)
    dense, fast, stats = _both(model, PROMPT)
    assert stats.mode == "speculative" and stats.rounds > 0
    assert fast.tolist() == dense.tolist()
    assert fast.shape[1] == len(PROMPT) + 20


def test_a_passed_generation_config_is_merged_with_the_models():
    """GenerationConfig(max_new_tokens=30) keeps the model's own EOS: decoding stops there, as dense does."""
    model = _model("gpt2", 2, "dynamic", scale=0.15)
    _, free, _ = _both(model, PROMPT, max_new_tokens=30, min_new_tokens=30)
    new = free[0, len(PROMPT):].tolist()
    eos = next(t for i, t in enumerate(new) if i >= 4 and t not in new[:i] and t not in PROMPT)
    model.generation_config.eos_token_id = eos
    dense, fast, stats = _both(model, PROMPT, 4, generation_config=GenerationConfig(max_new_tokens=30))
    assert stats.mode == "speculative"
    assert fast.tolist() == dense.tolist()
    assert fast[0, -1].item() == eos and fast.shape[1] < len(PROMPT) + 30


@pytest.mark.parametrize("draft", [4, 8])
def test_eos_reached_inside_a_draft_ends_the_text_as_dense(draft):
    model = _model("gpt2", 2, "dynamic", scale=0.15)
    _, free, _ = _both(model, PROMPT, max_new_tokens=30, min_new_tokens=30)
    new = free[0, len(PROMPT):].tolist()
    for eos in dict.fromkeys(t for i, t in enumerate(new) if 2 <= i and t not in new[:i] and t not in PROMPT):
        dense, fast, stats = _both(model, PROMPT, draft, max_new_tokens=30, eos_token_id=eos)
        assert fast.tolist() == dense.tolist()
        assert fast[0, -1].item() == eos
        assert stats.new_tokens == fast.shape[1] - len(PROMPT)


@pytest.mark.parametrize(("arch", "stacks", "preset", "noise"), [CASES[0], CASES[3], CASES[7]])
def test_a_one_token_prompt_decodes_as_dense(arch, stacks, preset, noise):
    model = _model(arch, stacks, preset, scale=noise)
    dense, fast, stats = _both(model, [5], max_new_tokens=30, min_new_tokens=30)
    assert stats.mode == "speculative" and stats.rounds > 0
    assert fast.tolist() == dense.tolist()


def test_a_sequential_drafter_that_changes_stacks_decodes_as_dense():
    model = _model("llama", 3, "sequential", scale=0.15)
    dense, fast, stats = _both(model, PROMPT, max_new_tokens=60, min_new_tokens=60)
    assert stats.drafter_changes > 0 and stats.drafted > stats.accepted > 0, stats
    assert fast.tolist() == dense.tolist()


@pytest.mark.parametrize(("arch", "stacks", "preset", "noise"), [CASES[6], CASES[7]])
def test_a_sequential_rejection_runs_no_stack_again(arch, stacks, preset, noise):
    """Each round costs its drafts plus one verification pass of the M stacks; a rejection replays only the side
    path from the verification's stack outputs (and the caches still continue as dense: the rollback test)."""
    model = _model(arch, stacks, preset, scale=noise)
    dense, fast, stats = _both(model, PROMPT, 3, max_new_tokens=40, min_new_tokens=40)
    assert fast.tolist() == dense.tolist()
    assert stats.drafted > stats.accepted, stats
    assert stats.stack_steps == stats.drafted + stacks * (stats.rounds + stats.dense_tokens), stats


def test_pipeline_decodes_speculatively_with_dense_output():
    from helpers import char_tokenizer

    model = _model("gpt2", 2, "dynamic", scale=0.15)
    pipe = pipeline("text-generation", model=model, tokenizer=char_tokenizer())
    with torch.no_grad():
        fast = pipe("the cat", return_tensors=True, max_new_tokens=16, min_new_tokens=16, do_sample=False)
        stats = model.speculation_stats
        dense = pipe("the cat", return_tensors=True, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                     speculative=0)
    assert stats.mode == "speculative" and stats.rounds > 0
    assert fast == dense


def test_calls_speculation_cannot_reproduce_decode_densely_with_a_reason():
    """Each call below changes what dense decoding computes in a way speculation does not follow: it must
    decode densely (same output as speculative=0) and say why."""
    from transformers import TextStreamer
    from transformers.generation.logits_process import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    model = _model("gpt2", 2, "dynamic")
    ids = torch.tensor([SHORT, SHORT])
    padded = [5, 17, 3, 8]  # holds the pad token (3, not EOS) and no mask is given: transformers infers one
    cases = [
        ("batch", dict(inputs=ids, attention_mask=torch.ones_like(ids))),
        ("beam_search", dict(num_beams=2)),
        ("padded", dict(inputs=torch.tensor([padded]), pad_token_id=3)),
        ("InfNanRemoveLogitsProcessor", dict(remove_invalid_values=True)),
        ("RepetitionPenaltyLogitsProcessor", dict(repetition_penalty=1.3)),
        ("RepetitionPenaltyLogitsProcessor",
         dict(logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.3)]))),
        ("return_dict_in_generate", dict(return_dict_in_generate=True)),
        ("streamer", dict(streamer=TextStreamer(__import__("helpers").char_tokenizer()))),
    ]
    for reason, options in cases:
        options = {"inputs": torch.tensor([SHORT]), "max_new_tokens": 5, "do_sample": False, **options}
        with torch.no_grad():
            dense = model.generate(speculative=0, **{k: v for k, v in options.items() if k != "streamer"})
            out = model.generate(**options)
        stats = model.speculation_stats
        assert stats.mode == "dense" and reason in stats.reason, (reason, stats)
        out = out.sequences if hasattr(out, "sequences") else out
        dense = dense.sequences if hasattr(dense, "sequences") else dense
        assert out.tolist() == dense.tolist(), reason
    with pytest.raises(ValueError, match="speculative"):
        model.generate(ids[:1], max_new_tokens=3, speculative=-1)


def _rounds(draft: DraftLength, rounds: list[tuple[int, int, int]]) -> int:
    """Feed (drafted, kept, stack steps) rounds; -> the dense tokens the draft length then asks for."""
    for drafted, kept, cost in rounds:
        draft.update(drafted, kept, cost)
    return draft.dense_left


def test_back_off_compares_the_cost_per_token_with_a_dense_step():
    """Parallel graph, k = 4: a round costs k + 1 drafter steps + (M - 1) verify passes for kept + 1 tokens;
    a dense step costs M per token. Break-even acceptance is about 1/M, not a fixed share."""
    two = [(4, 2, 6), (4, 2, 6), (4, 1, 6), (4, 2, 6)]  # 7/16 kept: 24 steps for 11 tokens > 2 per token
    assert _rounds(DraftLength(4, dense_cost=2), two) > 0
    three = [(4, 2, 7), (4, 1, 7), (4, 2, 7), (4, 1, 7)]  # 6/16 kept: 28 steps for 10 tokens < 3 per token
    assert _rounds(DraftLength(4, dense_cost=3), three) == 0
    assert _rounds(DraftLength(4, dense_cost=2), three) > 0


def test_poor_drafts_back_off_to_dense_steps():
    """The paper's static blend: drafts are rarely kept, so most tokens come from dense steps, and the whole
    call, probes included, costs well under 1.5x dense decoding's 2 stack steps per token."""
    model = _model("gpt2", 2, "paper")
    _, stats = _generate(model, "auto", max_new_tokens=60, min_new_tokens=60, do_sample=False)
    assert stats.acceptance_rate < 0.5, stats
    assert stats.dense_tokens >= 30, stats
    assert stats.stack_steps_per_token < 3.0, stats


def test_cli_generate_speculative_flag_and_verbose(tmp_path, capsys):
    """`superpose generate --speculative K` prints the same text as `--speculative 0`; --verbose the speed."""
    from helpers import char_tokenizer, save_pair

    from superpose.cli.commands import main

    base_dir, expert_dir = save_pair(tmp_path)
    base, expert = (type(tiny_model()).from_pretrained(str(d)) for d in (base_dir, expert_dir))
    settings = paper_model(**SETTINGS["dynamic"])
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
