"""Dynamic superposition: N experts, per-token gates (with evidence), both graphs, the mixture head.

Each test compares against something that cannot share the bug: a stack's own model, a run without a
cache or without a batch, a sequence whose future was changed, an untrained model of the static kind.
"""
import math

import pytest
import torch
from helpers import assert_left_padded_batch_generates_as_each_prompt_alone, paper_model, tiny_model

from superpose.model.superposed import SuperposedModel

PAD = 0
GATED = [
    dict(gate="token"),
    dict(gate="token", gate_evidence="fixed_share"),
    dict(gate="token", gate_evidence="fixed_share", gate_hidden=8, head="mixture"),
    dict(gate="token", gate_evidence="fixed_share_mix", gate_hidden=8, head="mixture"),
]


def _experts(arch: str, n: int) -> dict:
    return {f"x{k}": tiny_model(arch, seed=k, init=0.5) for k in range(1, n + 1)}


def _model(arch: str = "gpt2", n: int = 2, randomise: bool = True, **settings) -> SuperposedModel:
    """A superposed model whose gates (if any) read their features: trained-looking random gate weights."""
    torch.manual_seed(0)
    model = SuperposedModel.from_models(tiny_model(arch, seed=0, init=0.5), _experts(arch, n),
                                        paper_model(**settings))
    if randomise and model.blend.gate is not None:
        with torch.no_grad():
            for name, param in model.blend.gate.named_parameters():
                param.normal_(0, 0.5) if name != "evidence_scale" else param.fill_(1.0)
    return model.eval()


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("graph", ["sequential", "parallel"])
@pytest.mark.parametrize("gate", ["static", "token"])
def test_one_hot_gates_with_the_mixture_head_give_each_stacks_own_model(arch, n, graph, gate):
    settings = dict(graph=graph, gate=gate, head="mixture", ae_layers=[])
    if gate == "token":
        settings["gate_evidence"] = "fixed_share"
    model = _model(arch, n, **settings)
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(1))
    for m, stack in enumerate(model.stack_models):
        model.blend.set_stack(m)
        with torch.no_grad():
            ours = _log_probs(model(ids).logits)
            own = _log_probs(stack(ids).logits)
        torch.testing.assert_close(ours, own, atol=1e-5, rtol=0, msg=f"stack {m}")


@pytest.mark.parametrize("graph", ["sequential", "parallel"])
@pytest.mark.parametrize("settings", [dict(gate="static"), *GATED], ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("n", [1, 3])
def test_gates_and_logits_at_t_ignore_later_tokens(graph, settings, n):
    model = _model("gpt2", n, graph=graph, ae_layers=[0, 1], ae_residual=True, **settings)
    with torch.no_grad():  # residual AEs start at zero: give them weights so their convolutions matter
        for param in model.autoencoders.parameters():
            param.normal_(0, 0.2)
    ids = torch.randint(1, 90, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    t = 6
    changed[:, t + 1 :] = torch.randint(1, 90, (2, 12 - t - 1), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(ids, output_gates=True)
        b = model(changed, output_gates=True)
    torch.testing.assert_close(a.logits[:, : t + 1], b.logits[:, : t + 1], atol=1e-5, rtol=0)
    for layer, (ga, gb) in enumerate(zip(a.gate_weights, b.gate_weights)):
        torch.testing.assert_close(ga[:, : t + 1], gb[:, : t + 1], atol=1e-6, rtol=0, msg=f"layer {layer}")
    assert not torch.allclose(a.logits[:, t + 1 :], b.logits[:, t + 1 :])  # the change is visible after t


@pytest.mark.parametrize("graph", ["sequential", "parallel"])
def test_token_gates_vary_along_the_sequence_and_sum_to_one(graph):
    model = _model("gpt2", 2, graph=graph, **GATED[1])
    ids = torch.randint(1, 90, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        gates = model(ids, output_gates=True).gate_weights
    assert len(gates) == 2 and gates[0].shape == (2, 12, 3)
    for weights in gates:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 12))
        assert weights.std(dim=1).max() > 1e-3  # per-token, not one weight per layer


DYNAMIC = [dict(graph=g, **GATED[2]) for g in ("sequential", "parallel")]


@pytest.mark.parametrize(("arch", "n"), [("gpt2", 1), ("gpt2", 2), ("llama", 2), ("gpt2", 3)])
@pytest.mark.parametrize("settings", DYNAMIC, ids=["sequential", "parallel"])
@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
def test_cached_generation_equals_uncached(arch, n, settings, mode):
    model = _model(arch, n, ae_layers=[1], ae_residual=True, **settings)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    options = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, pad_token_id=PAD,
                   return_dict_in_generate=True, output_scores=True)
    options.update({"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=20),
                    "beam": dict(do_sample=False, num_beams=3, num_return_sequences=2)}[mode])
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        with torch.no_grad():
            runs.append(model.generate(ids, use_cache=use_cache, **options))
    cached, uncached = runs
    assert type(cached.cache).__name__ == "SuperposedCache" and cached.cache.evidence
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("settings", DYNAMIC, ids=["sequential", "parallel"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_left_padded_batch_generates_as_each_prompt_alone(arch, settings, use_cache):
    model = _model(arch, 2, ae_layers=[0], **settings)
    model.generation_config.eos_token_id = None  # an early end would cut one run short and not the other
    assert_left_padded_batch_generates_as_each_prompt_alone(
        model, [[5, 6, 7], [9, 10, 11, 12, 13, 14], [20, 21, 22, 23]], use_cache, max_new_tokens=6)


@pytest.mark.parametrize("variant", ["1d", "2d"])
@pytest.mark.parametrize("graph", ["sequential", "parallel"])
def test_residual_autoencoders_start_as_the_identity(variant, graph):
    plain = _model("gpt2", 2, variant=variant, graph=graph, ae_layers=[])
    residual = _model("gpt2", 2, variant=variant, graph=graph, ae_layers=[0, 1], ae_residual=True)
    residual.blend.load_state_dict(plain.blend.state_dict())
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(residual(ids).logits, plain(ids).logits, atol=1e-6, rtol=0)
        paper = _model("gpt2", 2, variant=variant, graph=graph, ae_layers=[0, 1])
        paper.blend.load_state_dict(plain.blend.state_dict())
        assert not torch.allclose(paper(ids).logits, plain(ids).logits, atol=1e-3)  # the paper's form is no identity


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("head", ["base", "mixture"])
def test_an_untrained_gate_without_evidence_is_the_static_model(n, head):
    static = _model("gpt2", n, gate="static", head=head, ae_layers=[])
    gated = _model("gpt2", n, randomise=False, gate="token", gate_hidden=8, head=head, ae_layers=[])
    gated.blend.spline.load_state_dict(static.blend.spline.state_dict())
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(_log_probs(gated(ids).logits), _log_probs(static(ids).logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 2])
def test_an_untrained_evidence_gate_in_the_parallel_graph_is_the_fixed_share_mixture(n):
    """Uniform prior, direct evidence scale 1, no autoencoders: the experts' outputs mixed by fixed share."""
    from superpose.core.mixtures import fixed_share_log_weights, mix, token_log_probs

    model = _model("gpt2", n, randomise=False, graph="parallel", head="mixture", ae_layers=[], **GATED[1])
    model.blend.set_stack(0)
    with torch.no_grad():  # a uniform prior over the stacks
        model.blend.spline.control.fill_(0.5) if n == 1 else model.blend.spline.control.zero_()
        model.blend.spline.layer_bias.zero_()
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        own = torch.stack([_log_probs(stack(ids).logits) for stack in model.stack_models])  # (M, B, T, V)
        weights = fixed_share_log_weights(token_log_probs(own, ids), model.settings.evidence_rate)
        torch.testing.assert_close(_log_probs(model(ids).logits), mix(own, weights), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("temperatures", [[], [0.9, 1.0, 1.25]])
def test_an_untrained_rate_mixture_gate_is_the_fixed_share_mix_yardstick(n, temperatures):
    """As built, with no change to its prior: the model *is* the training-free `fixed_share_mix` baseline, read
    through the output temperature mixture when it has one (the default)."""
    from superpose.compare import BaselineContext, References, build_scorer
    from superpose.model.calibration import temperature_mixture

    model = _model("gpt2", n, randomise=False, graph="parallel", ae_layers=[], output_temperatures=temperatures,
                   **GATED[3])
    ids = torch.randint(1, 90, (2, 30), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        logits = {name: stack(ids).logits for name, stack in zip(model.stack_names, model.stack_models)}
        refs = References(logits, {name: 0.0 for name in logits}, ids.clone(), None)
        yardstick = build_scorer("fixed_share_mix", None, BaselineContext({}, None)).logits(ids, None, refs)
        if temperatures:
            yardstick = temperature_mixture(yardstick, ids, None, temperatures)
        torch.testing.assert_close(_log_probs(model(ids).logits), yardstick, atol=2e-5, rtol=0)


def test_rate_mixture_evidence_carries_across_chunks():
    """The rate mixture's row at t is the yardstick's weights after x_≤t; split in chunks, the same numbers."""
    from superpose.core.mixtures import rate_mixture_log_weights, token_log_probs
    from superpose.model.evidence import evidence_rates, fixed_share_evidence

    generator = torch.Generator().manual_seed(13)
    logits = [torch.randn(2, 12, 11, generator=generator) * 3 for _ in range(3)]
    ids = torch.randint(0, 11, (2, 12), generator=generator)
    rates = evidence_rates(0.02, "fixed_share_mix")
    whole = fixed_share_evidence(logits, ids, None, rates, rate_mixture=True)[0].rows
    assert whole.shape == (2, 12, len(rates) + 1, 3)
    expected = rate_mixture_log_weights(token_log_probs(torch.stack(logits).log_softmax(-1), ids), rates)
    torch.testing.assert_close(whole[:, :, -1].permute(2, 0, 1), expected, atol=1e-5, rtol=0)
    parts, state = [], None
    for start, stop in ((0, 5), (5, 6), (6, 12)):
        part, state = fixed_share_evidence([lg[:, start:stop] for lg in logits], ids[:, start:stop], None, rates,
                                           carried=state, rate_mixture=True)
        parts.append(part.rows)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=0)


def test_one_expert_static_blend_is_the_papers_formula():
    """w = (1 - alpha, alpha) per layer, the running state shared (the paper's graph), written out by hand."""
    model = _model("gpt2", 1, ae_layers=[])
    with torch.no_grad():
        model.blend.spline.control.copy_(torch.linspace(0.1, 0.9, model.blend.spline.control.numel()))
    base, expert = model.stack_models
    ids = torch.randint(1, 90, (1, 9), generator=torch.Generator().manual_seed(8))
    alpha = model.alphas()
    with torch.no_grad():
        positions = torch.arange(9)[None]
        a = alpha.mean()
        h = (1 - a) * base.transformer.wte(ids) + base.transformer.wpe(positions) * (1 - a) \
            + a * (expert.transformer.wte(ids) + expert.transformer.wpe(positions))
        for layer in range(2):
            u = base.transformer.h[layer](h)
            v = expert.transformer.h[layer](h)
            u, v = (u[0] if isinstance(u, tuple) else u), (v[0] if isinstance(v, tuple) else v)
            h = (1 - alpha[layer]) * u + alpha[layer] * v
        expected = base.lm_head(base.transformer.ln_f(h))
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("graph", ["sequential", "parallel"])
def test_mixture_head_mixes_each_heads_probabilities_by_the_last_layers_weights(graph):
    model = _model("gpt2", 2, graph=graph, ae_layers=[], **GATED[2])
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out = model(ids, output_gates=True, output_hidden_states=True)
        # sequential: every head reads the shared state; parallel: each head its own expert's last state
        own = model.independent_states(ids, None)
        last = [out.hidden_states[-1] if graph == "sequential" else own[m][-1] for m in range(3)]
        probs = torch.stack([torch.softmax(stack.logits(h), -1) for stack, h in zip(model.stacks, last)], dim=2)
        expected = (out.gate_weights[-1].unsqueeze(-1) * probs).sum(2)
    torch.testing.assert_close(out.logits.exp(), expected, atol=1e-6, rtol=1e-4)
    assert out.gate_weights[-1].std(dim=1).max() > 1e-3


def test_gate_label_and_load_balance_losses_on_known_weights():
    from superpose.training.losses import gate_label_loss, load_balance_loss

    one_hot = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])  # (B=1, T=3, M=2)
    labels = torch.tensor([[0, 1, -1]])  # the third token has no label
    assert gate_label_loss([one_hot], labels).item() == pytest.approx(0.0, abs=1e-6)
    assert gate_label_loss([one_hot], torch.tensor([[1, 1, -1]])).item() == pytest.approx(-math.log(1e-9) / 2, rel=1e-4)
    uniform = torch.full((1, 3, 2), 0.5)
    everything_on_one = torch.tensor([[[1.0, 0.0]] * 3])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert load_balance_loss([uniform], mask).item() == pytest.approx(1.0)
    assert load_balance_loss([everything_on_one], mask).item() == pytest.approx(2.0)


@pytest.mark.parametrize("rate", [0.002, 0.02, 0.2])
def test_gate_evidence_is_the_fixed_share_posterior_and_carries_across_chunks(rate):
    """Position t's evidence = the fixed-share weights of the output mixture at t (tokens ≤ t); split in two
    chunks with the carried state, the same numbers."""
    from superpose.core.mixtures import fixed_share_log_weights, token_log_probs
    from superpose.model.evidence import fixed_share_evidence

    generator = torch.Generator().manual_seed(10)
    logits = [torch.randn(2, 9, 11, generator=generator) * 3 for _ in range(3)]  # M = 3 stacks, V = 11
    ids = torch.randint(0, 11, (2, 9), generator=generator)
    expected = fixed_share_log_weights(token_log_probs(torch.stack(logits).log_softmax(-1), ids), rate)  # (M, B, T)
    whole = fixed_share_evidence(logits, ids, None, [rate])[0].rows
    torch.testing.assert_close(whole[:, :, 0].permute(2, 0, 1), expected, atol=1e-5, rtol=0)
    first, state = fixed_share_evidence([lg[:, :4] for lg in logits], ids[:, :4], None, [rate, 0.5])
    rest, _ = fixed_share_evidence([lg[:, 4:] for lg in logits], ids[:, 4:], None, [rate, 0.5], carried=state)
    torch.testing.assert_close(torch.cat([first.rows, rest.rows], dim=1)[:, :, 0], whole[:, :, 0], atol=1e-5, rtol=0)


def test_the_gate_competes_with_the_rate_filters_as_one_more_bayesian_filter():
    """gated_rate_mixture against a float64 loop: predictors = the R filters and the gate, prior (1 - π)/R each
    and π, posterior by each one's likelihood of x_≤t; chunked with a carried store, the same numbers."""
    from superpose.model.evidence import evidence_rates, fixed_share_evidence, gated_rate_mixture

    generator = torch.Generator().manual_seed(14)
    logits = [torch.randn(2, 10, 7, generator=generator) * 2 for _ in range(3)]
    ids = torch.randint(0, 7, (2, 10), generator=generator)
    gate = torch.log_softmax(torch.randn(2, 10, 3, generator=generator) * 2, -1)
    prior = 0.3
    rates = evidence_rates(0.02, "fixed_share_mix")
    evidence, _ = fixed_share_evidence(logits, ids, None, rates, rate_mixture=True)
    got, own_nll = gated_rate_mixture(evidence, gate, layer=0, gate_prior=prior)
    pi = torch.tensor(prior, dtype=torch.float64)
    gate_alone = []  # the gate's own log-likelihood of each observed token
    log_p = torch.stack(logits).double().log_softmax(-1)  # (M, B, T, V)
    filters = evidence.rows[:, :, : len(rates)].double().exp()  # (B, T, R, M): weights after x_≤t
    for b in range(2):
        gate_w = gate[b].double().exp()
        lik = torch.zeros(len(rates) + 1, dtype=torch.float64)
        previous = [torch.full((3,), 1 / 3, dtype=torch.float64)] * (len(rates) + 1)
        for t in range(10):
            if t > 0:  # x_t is scored with the weights each predictor had after x_<t
                p = log_p[:, b, t - 1, ids[b, t]].exp()
                lik += torch.stack([(w * p).sum() for w in previous]).log()
                gate_alone.append((previous[-1] * p).sum().log())
            post = torch.cat([(1 - pi).log() - math.log(len(rates)) + lik[:-1], pi.log() + lik[-1:]]).softmax(0)
            current = [filters[b, t, k] for k in range(len(rates))] + [gate_w[t]]
            expected = sum(post[j] * current[j] for j in range(len(current)))
            torch.testing.assert_close(got[b, t].double().exp(), expected, atol=1e-5, rtol=0)
            previous = current
    assert float(own_nll) == pytest.approx(-float(torch.stack(gate_alone).mean()), rel=1e-5)
    store, parts, state = {}, [], None
    for start, stop in ((0, 4), (4, 10)):
        part, state = fixed_share_evidence([lg[:, start:stop] for lg in logits], ids[:, start:stop], None, rates,
                                           carried=state, rate_mixture=True)
        part.store = store
        parts.append(gated_rate_mixture(part, gate[:, start:stop], layer=0, gate_prior=prior)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), got, atol=1e-5, rtol=0)


def test_a_gate_that_predicts_badly_fades_to_the_rate_mixture():
    from superpose.core.mixtures import rate_mixture_log_weights, token_log_probs
    from superpose.model.evidence import evidence_rates, fixed_share_evidence, gated_rate_mixture

    generator = torch.Generator().manual_seed(15)
    logits = [torch.randn(1, 60, 9, generator=generator) * 3 for _ in range(2)]
    ids = torch.stack([lg[0].argmax(-1) for lg in logits])[:1]  # stack 0's own greedy tokens: stack 0 is right
    wrong = torch.log(torch.tensor([1e-4, 1 - 1e-4])).expand(1, 60, 2)  # a gate sure of stack 1
    rates = evidence_rates(0.02, "fixed_share_mix")
    evidence, _ = fixed_share_evidence(logits, ids, None, rates, rate_mixture=True)
    got = gated_rate_mixture(evidence, wrong, layer=0)[0].exp()
    yardstick = rate_mixture_log_weights(token_log_probs(torch.stack(logits).log_softmax(-1), ids), rates).exp()
    assert got[0, 0, 1] > 0.4  # at first the gate has half the say
    torch.testing.assert_close(got[0, 20:], yardstick[:, 0, 20:].T, atol=1e-3, rtol=0)  # then none


def test_a_gate_of_the_earlier_preset_scores_as_the_earlier_code_did():
    """The numbers below were computed by the code before the rate mixture existed (three fixed-share rates, here
    tiny ones whose log-weights reach -23): a run trained with that preset keeps its outputs."""
    settings = paper_model(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share",
                             gate_hidden=8, ae_layers=[], evidence_rate=1e-9)
    torch.manual_seed(0)
    model = SuperposedModel.from_models(tiny_model("gpt2", 0, init=0.5), {"fr": tiny_model("gpt2", 1, init=0.5)},
                                        settings)
    with torch.no_grad():
        for name, param in model.blend.gate.named_parameters():
            if name != "evidence_scale":
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))) * 0.5)
        ids = torch.randint(1, 90, (2, 12), generator=torch.Generator().manual_seed(3))
        logits = model.eval()(ids).logits
    expected = torch.tensor([[-5.072447776794434, -5.13580322265625, -5.470584869384766, -7.779350280761719],
                             [-2.3433709144592285, -7.150225639343262, -1.9485331773757935, -6.5253424644470215]])
    torch.testing.assert_close(logits[:, -1, :4], expected, atol=1e-5, rtol=0)
    assert float(logits.double().sum()) == pytest.approx(-17854.57311205566, rel=1e-6)
