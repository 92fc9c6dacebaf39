"""lm-evaluation-harness takes a SuperposedModel like any causal LM (optional: needs `pip install lm_eval`).

HFLM batches requests with right padding and no attention mask for log-likelihoods, and with left
padding plus a mask for generation; each answer must equal what the model itself gives for the
request alone.
"""
import pytest
import torch

pytest.importorskip("lm_eval")
from helpers import char_tokenizer, paper_model, tiny_pair  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from superpose.model.superposed import SuperposedModel  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    base, expert = tiny_pair("gpt2", init=0.5)  # large weights: peaked, context-dependent next tokens
    torch.manual_seed(0)
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[0, 1])).eval()
    tok = char_tokenizer()
    return model, tok, HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")


def _log_probs(model, ids: list[int]) -> torch.Tensor:
    """(T - 1,) log p(ids[t] | ids[:t]) for t >= 1, from one forward of the model alone."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]  # (T - 1, V)
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def _requests(kind: str, arguments: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, args, i) for i, args in enumerate(arguments)]


def test_loglikelihood_equals_the_models_own_sum(setup):
    model, tok, lm = setup
    pairs = [("the cat", " sat"), ("LE CHAT EST", " SUR LA TABLE"), ("a", "b"), ("we like to read", " books")]
    results = lm.loglikelihood(_requests("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, results, strict=True):
        ctx, cont = tok.encode(context), tok.encode(continuation)
        with torch.no_grad():
            logits = model(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1]  # (len(cont), V)
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(cont).unsqueeze(-1)).sum().item()
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == bool((logits.argmax(-1) == torch.tensor(cont)).all())


def test_loglikelihood_rolling_equals_the_models_own_sum(setup):
    model, tok, lm = setup
    texts = ["the sun is warm today", "NOUS AIMONS LA MER ET LE CIEL"]
    results = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]))
    for text, logprob in zip(texts, results, strict=True):
        # one window (the text is shorter than max_length); the first token is predicted from <eos>
        expected = _log_probs(model, [tok.eos_token_id] + tok.encode(text)).sum().item()
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_generate_until_returns_each_prompts_own_greedy_text(setup):
    model, tok, lm = setup
    prompts = ["the cat", "LES ENFANTS JOUENT"]  # different lengths: HFLM left-pads the batch
    settings = {"until": ["."], "max_gen_toks": 6, "do_sample": False}
    results = lm.generate_until(_requests("generate_until", [(p, dict(settings)) for p in prompts]))
    for prompt, text in zip(prompts, results, strict=True):
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split(".")[0]
        assert isinstance(text, str) and text == expected
    assert any(results), "the model generated nothing at all"
