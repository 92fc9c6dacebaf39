"""Speculative superposition: the dense model's exact output at close to one stack's cost.

On most text the gate puts nearly all the weight on one stack. That stack (the heaviest at the current
position) drafts k tokens alone, with its own cache; one verification pass then runs the other stacks over
the drafted tokens (a batched prefill from their caches), computes the side path (evidence, gates,
autoencoders) and the dense model's next-token distribution at every drafted position, reusing the drafter's
states and logits. The longest prefix the dense model would have produced is kept:

* greedy: a drafted token is kept while it is the dense argmax; the first mismatch is replaced by it;
* sampling: speculative rejection sampling. Token y drawn from the drafter's q is kept with probability
  min(1, p(y) / q(y)), else the token comes from the normalised residual max(0, p - q), so every token is
  distributed exactly as the dense model's p.

p and q are the scores after the logits processors `transformers` itself builds for the call: the model's
`generate` hands this module to `transformers.generate` as its decoding loop (`custom_generate`), so the
generation config is merged, defaulted (top-k 50 when sampling, 20 new tokens) and turned into processors and
stopping criteria by the installed `transformers`, exactly as for dense decoding. Speculation runs only when
every processor is one whose per-position result it reproduces (min length, temperature, top-k, top-p, min-p)
and every stopping criterion is the length or EOS one; anything else decodes densely, with the reason in
`model.speculation_stats`.

After a rejection every stack's KV cache is cropped to the kept length and the side states (evidence,
convolution history) are restored and replayed over the kept positions from the stack outputs the
verification computed (no stack runs again, in either graph), so decoding goes on exactly as a dense run
would. In the sequential graph no stack runs alone inside the model, so the drafter is that
stack as a standalone model with its own cache, and the full model verifies.

The draft length is fixed or adaptive (longer after a fully kept draft, shorter after a rejection). Decoding
backs off to dense steps for a while when the rounds cost more stack steps per token than a dense step (M, one
per stack), and probes again later, so speculation does not make generation slower. The cost is counted in
stack forward calls, not measured in seconds, so a seeded sampled run gives the same tokens every time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerationMode
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria, StoppingCriteriaList

from superpose.model import graphs
from superpose.model.calibration import as_read_so_far, calibrated

START_LENGTH = 6  # adaptive draft length: first guess
MAX_LENGTH = 16  # adaptive draft length: ceiling
PROBE_TOKENS = 8  # drafted tokens to judge the cost on before backing off (a hopeless probe costs about twice that)
BACKOFF_TOKENS = 16  # dense tokens after a costly probe; doubles after each costly probe (up to MAX_BACKOFF)
MAX_BACKOFF = 256

# Logits processors whose result at a position depends only on that position's logits and the tokens before it:
# applied row by row to the verified positions they give what dense decoding computes.
EXACT_PROCESSORS = (MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper,
                    TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)
EXACT_STOPS = (MaxLengthCriteria, EosTokenCriteria)
# generate() arguments that reach only dense decoding's loop (transformers hands none of them to a custom loop)
DENSE_ONLY = ("streamer", "synced_gpus", "assistant_model", "assistant_tokenizer", "tokenizer", "custom_generate")
# what transformers prepares for the forward pass of every call; anything else changes the forward pass
PREPARED_INPUTS = {"attention_mask", "position_ids", "logits_to_keep", "cache", "past_key_values", "use_cache",
                   "cache_position"}
OUTPUT_FLAGS = ("return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
                "output_hidden_states")


class DenseFallback(Exception):
    """Raised inside the decoding loop when the prepared call is one speculation cannot reproduce."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class SpeculationStats:
    """What the last `generate()` call did: how many tokens were drafted and kept, and what it cost."""

    mode: str = "speculative"  # or "dense": transformers' decoding ran (see `reason`)
    reason: str | None = None
    new_tokens: int = 0
    rounds: int = 0  # draft-and-verify rounds
    drafted: int = 0
    accepted: int = 0
    dense_tokens: int = 0  # tokens decoded by a dense step (back-off, or no room left to draft)
    stack_steps: int = 0  # stack forward calls; a batched pass over several tokens counts once per stack
    drafter_changes: int = 0  # times the drafting stack changed (the heaviest stack moved)
    seconds: float = 0.0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def stack_steps_per_token(self) -> float | None:
        return self.stack_steps / self.new_tokens if self.new_tokens else None

    def summary(self) -> str:
        if self.mode != "speculative":
            return f"dense decoding ({self.reason})"
        rate = self.acceptance_rate
        return (f"speculative decoding: {self.new_tokens} tokens in {self.rounds} rounds, acceptance "
                f"{'n/a' if rate is None else f'{rate:.0%}'} ({self.accepted}/{self.drafted} drafted), "
                f"{self.dense_tokens} dense steps, {self.stack_steps_per_token or 0:.2f} stack steps per token, "
                f"{self.drafter_changes} drafter changes")


@dataclass
class DecodingRules:
    """The dense decoding to reproduce: greedy or sampling, with the logits processors and stopping criteria
    `transformers` built for the call."""

    do_sample: bool
    processors: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    stopping: StoppingCriteriaList = field(default_factory=StoppingCriteriaList)

    def __post_init__(self):
        eos = [c.eos_token_id for c in self.stopping if isinstance(c, EosTokenCriteria)]
        self.eos = tuple(int(t) for ids in eos for t in ids.flatten().tolist())  # a draft ends at one of these

    def scores(self, logits: torch.Tensor, tokens: list[int], start: int) -> torch.Tensor:
        """(T, V) logits of T successive positions -> (T, V) float32 scores as dense decoding processes them.
        Row r predicts the token after tokens[:start + r], the input ids the processors see at that step."""
        rows = []
        for r in range(logits.shape[0]):
            ids = torch.tensor([tokens[: start + r]], dtype=torch.long, device=logits.device)
            rows.append(self.processors(ids, logits[r: r + 1].float()))  # dense decoding's float32 copy
        return torch.cat(rows)

    def choose(self, scores: torch.Tensor) -> int:
        """One token from (V,) processed scores: the argmax, or a draw from their softmax."""
        if not self.do_sample:
            return int(scores.argmax())
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1))

    def stopped(self, tokens: list[int], device) -> bool:
        """Whether dense decoding stops after `tokens` (its stopping criteria on the sequence so far)."""
        return bool(self.stopping(torch.tensor([tokens], dtype=torch.long, device=device), None).any())


class DraftLength:
    """Fixed k, or adaptive: +2 after a fully kept draft (up to MAX_LENGTH), halfway to the kept run after a
    rejection (at least 2).

    Either way, when the rounds since the last judgement (at least PROBE_TOKENS drafted tokens) cost more stack
    steps per produced token than a dense step (`dense_cost`: one per stack), the next BACKOFF_TOKENS tokens
    are decoded densely (0 = a dense step), then drafting is probed again."""

    def __init__(self, fixed: int | None, dense_cost: float = 1.0):
        self.fixed = fixed
        self.dense_cost = dense_cost
        self.length = fixed or START_LENGTH
        self.dense_left = 0
        self.backoff = BACKOFF_TOKENS
        self.window = [0, 0, 0.0]  # drafted, produced, stack steps since the last judgement

    def next(self, remaining: int) -> int:
        if self.dense_left > 0:
            self.dense_left -= 1
            return 0
        return max(0, min(self.length, remaining - 1))

    def update(self, drafted: int, accepted: int, cost: float) -> None:
        """After a round that kept `accepted` of `drafted` tokens (and produced one more) for `cost` stack steps."""
        if self.fixed is None:
            self.length = (min(self.length + 2, MAX_LENGTH) if accepted == drafted
                           else max(2, (self.length + accepted + 1) // 2))
        self.window = [self.window[0] + drafted, self.window[1] + accepted + 1, self.window[2] + cost]
        if self.window[0] >= PROBE_TOKENS:
            if self.window[2] > self.dense_cost * self.window[1]:
                self.dense_left, self.backoff = self.backoff, min(2 * self.backoff, MAX_BACKOFF)
                self.length = self.fixed or START_LENGTH
            else:
                self.backoff = BACKOFF_TOKENS
            self.window = [0, 0, 0.0]


def accept_greedy(dense_scores: torch.Tensor, drafted: list[int]) -> tuple[int, int]:
    """(k+1, V) dense scores at the positions that predict drafted[0..k-1] and the token after -> (kept drafts
    a, the token after them: the dense argmax at the first mismatch, or after the whole draft)."""
    targets = dense_scores.argmax(dim=-1).tolist()
    kept = 0
    while kept < len(drafted) and targets[kept] == drafted[kept]:
        kept += 1
    return kept, targets[kept]


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """max(0, p - q), normalised: where a rejected draft's replacement is drawn from (p where it is all 0)."""
    rest = (p - q).clamp(min=0)
    total = rest.sum()
    return rest / total if total > 0 else p


def acceptance_probability(p: torch.Tensor, q: torch.Tensor, token: int) -> float:
    """min(1, p(y) / q(y)) for a token y the drafter drew from q."""
    return min(1.0, float(p[token]) / float(q[token]))


def _uniform() -> float:
    return float(torch.rand(()))


def _draw(probs: torch.Tensor) -> int:
    return int(torch.multinomial(probs, 1))


def accept_sampled(dense_scores: torch.Tensor, draft_scores: torch.Tensor, drafted: list[int],
                   uniform=_uniform, draw=_draw) -> tuple[int, int]:
    """Speculative rejection sampling: (k+1, V) dense scores, (k, V) scores the drafts were drawn from ->
    (kept drafts, the next token), each token distributed exactly as the dense model's. `uniform` (a U(0, 1)
    number) and `draw` (a token from a distribution) are torch's RNG unless given."""
    p = torch.softmax(dense_scores.double(), dim=-1)
    q = torch.softmax(draft_scores.double(), dim=-1)
    for i, token in enumerate(drafted):
        if uniform() >= acceptance_probability(p[i], q[i], token):
            return i, draw(residual(p[i], q[i]))
    return len(drafted), draw(p[len(drafted)])


class SpeculativeDecoder:
    """Batch-1 decoding of one prompt: a cache holding every stack, a pending token not yet in it, and the
    draft-verify-rollback rounds."""

    def __init__(self, model, prompt: list[int], rules: DecodingRules, draft: DraftLength,
                 stats: SpeculationStats):
        self.model, self.rules, self.lengths, self.stats = model, rules, draft, stats
        self.tokens = list(prompt)
        self.prompt_length = len(prompt)
        self.device = model.device
        self.cache = model.new_cache()
        self.parallel = model.settings.graph == "parallel"
        self.own_logits = model.blend.uses_evidence or model.settings.head == "mixture"
        self.standalone: dict[int, DynamicCache] = {}  # sequential graph: each drafter's own cache
        self.drafter: int | None = None  # the prefill picks the first

    # ---- bookkeeping ------------------------------------------------------------------------------

    @property
    def produced(self) -> int:
        return len(self.tokens) - self.prompt_length

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.long, device=self.device)  # (1, T)

    def _positions(self, start: int, length: int) -> torch.Tensor:
        return torch.arange(start, start + length, device=self.device).unsqueeze(0)  # (1, T)

    def _pick_drafter(self, weights: torch.Tensor) -> None:
        """The stack that holds the most weight at the current position drafts next."""
        drafter = int(weights.float().argmax())
        self.stats.drafter_changes += int(self.drafter is not None and drafter != self.drafter)
        self.drafter = drafter

    # ---- decoding ----------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, max_new_tokens: int) -> list[int]:
        self.prefill()
        stopped = False
        while self.produced < max_new_tokens and not stopped:
            length = self.lengths.next(max_new_tokens - self.produced)
            new = self._dense_step() if length == 0 else self._round(length)
            for token in new[: max_new_tokens - self.produced]:  # dense decoding checks after every token
                self.tokens.append(token)
                if self.rules.stopped(self.tokens, self.device):
                    stopped = True
                    break
        self.stats.new_tokens = self.produced
        return self.tokens

    def prefill(self) -> None:
        """Every stack over the prompt but its last token, which stays pending (the first draft starts there)."""
        if len(self.tokens) > 1:
            out = self.model(self._ids(self.tokens[:-1]), cache=self.cache, use_cache=True, output_gates=True,
                             logits_to_keep=1)
            self._pick_drafter(out.gate_weights[-1][0, -1])
        else:
            static = self.model.static_weights()[-1]  # (M,) or (M, d)
            self._pick_drafter(static.reshape(static.shape[0], -1).mean(-1))

    def _dense_step(self) -> list[int]:
        out = self.model(self._ids(self.tokens[-1:]), cache=self.cache, use_cache=True, output_gates=True)
        self.stats.stack_steps += len(self.model.stacks)
        self.stats.dense_tokens += 1
        self._pick_drafter(out.gate_weights[-1][0, -1])
        return [self.rules.choose(self.rules.scores(out.logits[0, -1:], self.tokens, len(self.tokens))[0])]

    def _round(self, length: int) -> list[int]:
        steps = self.stats.stack_steps
        drafted, draft_scores, drafter_out = self.draft(length)
        snapshot = self.cache.side_states()
        dense_logits, gates, replay = self.verify(drafted, drafter_out)  # (k+1, V), (k+1, M)
        dense_scores = self.rules.scores(dense_logits, self.tokens + drafted, len(self.tokens))
        if self.rules.do_sample:
            kept, token = accept_sampled(dense_scores, draft_scores, drafted)
        else:
            kept, token = accept_greedy(dense_scores, drafted)
        self.stats.rounds += 1
        self.stats.drafted += len(drafted)
        self.stats.accepted += kept
        if kept < len(drafted):
            self._rollback(len(drafted) - kept, snapshot, replay, kept + 1)
        self.lengths.update(len(drafted), kept, self.stats.stack_steps - steps)
        self._pick_drafter(gates[kept])
        return drafted[:kept] + [token]

    # ---- draft ---------------------------------------------------------------------------------------

    def draft(self, length: int):
        """The drafter alone proposes `length` tokens -> (tokens, (k, V) scores they were drawn from, what the
        verification reuses: the parallel graph's drafter states and logits over the pending token and drafts)."""
        stack = self.model.stacks[self.drafter]
        drafted, scores = [], []
        if self.parallel:
            kv, start = self.cache.stacks[self.drafter], len(self.tokens) - 1
            feed, states, logits = [self.tokens[-1]], [], []
            for i in range(length + 1):  # the last step, over the last draft, lets verification score past it
                out = stack.run_stack(self._ids(feed), None, self._positions(start + i, 1), kv)
                states.append(out)
                logits.append(graphs.own_log_prob(stack, out[-1]))  # (1, 1, V) log-probs
                if i == length:
                    break
                drafted.append(self._propose(logits[-1][0], drafted, scores))
                feed = drafted[-1:]
                if self.rules.eos and drafted[-1] in self.rules.eos:
                    length = i + 1
            self.stats.stack_steps += len(drafted) + 1
            layers = [torch.cat([s[layer] for s in states], dim=1) for layer in range(len(states[0]))]
            return drafted, torch.cat(scores), (layers, torch.cat(logits, dim=1))
        kv = self.standalone.setdefault(self.drafter, DynamicCache(config=stack.config))
        seen = kv.get_seq_length()
        feed = self.tokens[seen:]  # catch up on everything since this stack last drafted, in one pass
        for _ in range(length):
            out = stack.run_stack(self._ids(feed), None, self._positions(seen, len(feed)), kv)
            seen += len(feed)
            drafted.append(self._propose(stack.logits(out[-1][:, -1:])[0], drafted, scores))
            feed = drafted[-1:]
            if self.rules.eos and drafted[-1] in self.rules.eos:
                break
        self.stats.stack_steps += len(drafted)
        return drafted, torch.cat(scores), None

    def _propose(self, logits: torch.Tensor, drafted: list[int], scores: list[torch.Tensor]) -> int:
        """(1, V) drafter logits of the next draft -> its token; its processed scores are kept as q."""
        logits = as_read_so_far(self.model, logits, self.cache)
        context = self.tokens + drafted
        processed = self.rules.scores(logits, context, len(context))
        scores.append(processed)
        return self.rules.choose(processed[0])

    # ---- verify ------------------------------------------------------------------------------------

    def verify(self, drafted: list[int], drafter_out):
        """The dense model over the pending token and the drafts -> ((k+1, V) logits, (k+1, M) last-layer
        weights, what a rollback needs to replay the side path)."""
        model, ids = self.model, self._ids(self.tokens[-1:] + drafted)  # (1, k+1)
        start = len(self.tokens) - 1
        positions = self._positions(start, ids.shape[1])
        if not self.parallel:  # the full model; each layer's stack outputs are kept for a rollback's replay
            static, layer_outputs = model.static_weights(), []
            result = graphs.sequential(model, ids, positions, self.cache, static=static, record=layer_outputs)
            head = graphs.head_logits(model, result, static)  # (1, k+1, V)
            self.stats.stack_steps += len(model.stacks)
            logits = calibrated(model, head, ids, None, self.cache)
            return logits[0], result.gates[-1][0], (layer_outputs, ids, positions, static, head)
        layers, drafter_logits = drafter_out
        stack_states, own = [], []
        for m, stack in enumerate(model.stacks):  # the other stacks: one batched pass each, from their caches
            if m == self.drafter:
                states, logits = layers, drafter_logits
            else:
                states = stack.run_stack(ids, None, positions, self.cache.stacks[m])
                logits = graphs.own_log_prob(stack, states[-1]) if self.own_logits else None
            stack_states.append(states)
            own.append(logits)
        self.stats.stack_steps += len(model.stacks) - 1
        own = own if self.own_logits else None
        static = model.static_weights()
        result = graphs.parallel(model, stack_states, ids, positions, self.cache, static=static, own_logits=own)
        head = graphs.head_logits(model, result, static)  # (1, k+1, V)
        logits = calibrated(model, head, ids, None, self.cache)
        return logits[0], result.gates[-1][0], (stack_states, own, ids, positions, static, head)

    # ---- roll back ---------------------------------------------------------------------------------

    def _rollback(self, rejected: int, snapshot, replay, kept_positions: int) -> None:
        """Forget the rejected drafts: crop every stack's cache, and put the side states (evidence, convolution
        history) back to where they were after the kept positions."""
        self.cache.crop_stacks(rejected)
        if not self.parallel:
            self._sync_standalone()
            if self.cache.has_side_states():  # the layers' stack outputs are known: replay the side path alone
                layer_outputs, ids, positions, static, head = replay
                self.cache.restore_side_states(snapshot)
                graphs.sequential(self.model, ids[:, :kept_positions], positions[:, :kept_positions], self.cache,
                                  static=static,
                                  stored=[[o[:, :kept_positions] for o in outs] for outs in layer_outputs])
                calibrated(self.model, head[:, :kept_positions], ids[:, :kept_positions], None, self.cache)
            return
        if self.cache.has_side_states():  # the stacks' states are known: replay the side path alone
            stack_states, own, ids, positions, static, head = replay
            self.cache.restore_side_states(snapshot)
            graphs.parallel(self.model, [[s[:, :kept_positions] for s in states] for states in stack_states],
                            ids[:, :kept_positions], positions[:, :kept_positions], self.cache, static=static,
                            own_logits=None if own is None else [lg[:, :kept_positions] for lg in own])
            calibrated(self.model, head[:, :kept_positions], ids[:, :kept_positions], None, self.cache)

    def _sync_standalone(self) -> None:
        """Sequential graph: drop the drafter's cached positions beyond what is kept (pending token + kept)."""
        kv = self.standalone.get(self.drafter)
        valid = self.cache.get_seq_length()
        if kv is not None and kv.get_seq_length() > valid:
            kv.crop(-(kv.get_seq_length() - valid))


# ---- the generate() entry point ---------------------------------------------------------------------


def draft_mode(speculative) -> int | None:
    """"auto"/None -> None (adaptive), an integer K >= 0 -> K; anything else is an error."""
    if speculative is None or speculative == "auto":
        return None
    if isinstance(speculative, bool) or not isinstance(speculative, int) or speculative < 0:
        raise ValueError(f"speculative must be 'auto' or a number of drafted tokens >= 0; got {speculative!r}")
    return speculative


def dense_reason(model, args: tuple, kwargs: dict, fixed: int | None) -> str | None:
    """Why this call must decode densely, judged before `transformers` prepares it (None: try speculation)."""
    if fixed == 0:
        return "speculative=0"
    if len(args) > 2:
        return "positional generate() arguments after the generation config"
    given = [name for name in DENSE_ONLY if kwargs.get(name) is not None]
    if given:
        return f"{', '.join(given)} given"
    if model.settings.conv_padding == "symmetric" and model.ae_layers:
        return "symmetric convolutions read the next token"
    if any(getattr(m.config, "sliding_window", None) for m in model.stack_models):
        return "sliding-window caches cannot be rolled back"
    return None


def check_prepared(input_ids: torch.Tensor, logits_processor, stopping_criteria, config, model_kwargs: dict) -> None:
    """Raise DenseFallback unless speculation reproduces this prepared call exactly."""
    mode = config.get_generation_mode()
    if mode not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        raise DenseFallback(f"generation mode {mode.value}")
    if input_ids.shape[0] != 1:
        raise DenseFallback("not a batch of one prompt")
    flags = [name for name in OUTPUT_FLAGS if getattr(config, name, False)]
    if flags:
        raise DenseFallback(f"{', '.join(flags)} requested")
    other = [type(p).__name__ for p in logits_processor if not isinstance(p, EXACT_PROCESSORS)]
    if other:
        raise DenseFallback(f"logits processors {other}")
    stops = [type(c).__name__ for c in stopping_criteria if not isinstance(c, EXACT_STOPS)]
    if stops:
        raise DenseFallback(f"stopping criteria {stops}")
    unknown = sorted(k for k, v in model_kwargs.items() if k not in PREPARED_INPUTS and v is not None)
    if unknown:
        raise DenseFallback(f"model inputs {unknown}")
    if model_kwargs.get("attention_mask") is not None:  # transformers drops a mask of all ones
        raise DenseFallback("the prompt is padded")
    if model_kwargs.get("use_cache") is False:
        raise DenseFallback("use_cache=False")
    cache = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
    if cache is not None and cache.get_seq_length() > 0:
        raise DenseFallback("a filled cache was given")
    positions = model_kwargs.get("position_ids")
    if positions is not None and not torch.equal(positions.flatten().cpu(), torch.arange(input_ids.shape[1])):
        raise DenseFallback("position ids other than 0, 1, 2, ...")


def decode_speculatively(model, input_ids: torch.Tensor, logits_processor: LogitsProcessorList,
                         stopping_criteria: StoppingCriteriaList, generation_config, *, draft: int | None = None,
                         **model_kwargs) -> torch.Tensor:
    """The decoding loop `transformers.generate` runs for a superposed model (its `custom_generate`): the
    same arguments as its own sampling loop, prepared by it; raises DenseFallback when it cannot reproduce
    that loop exactly."""
    check_prepared(input_ids, logits_processor, stopping_criteria, generation_config, model_kwargs)
    lengths = [c.max_length for c in stopping_criteria if isinstance(c, MaxLengthCriteria)]
    max_new_tokens = min(lengths, default=generation_config.max_length) - input_ids.shape[1]
    if max_new_tokens <= 0:
        raise DenseFallback("nothing to generate")
    rules = DecodingRules(bool(generation_config.do_sample), logits_processor, stopping_criteria)
    stats = SpeculationStats()
    tick = time.perf_counter()
    decoder = SpeculativeDecoder(model, input_ids[0].tolist(), rules, DraftLength(draft, len(model.stacks)), stats)
    tokens = decoder.run(max_new_tokens)
    stats.seconds = time.perf_counter() - tick
    model.speculation_stats = stats
    return torch.tensor([tokens], dtype=input_ids.dtype, device=input_ids.device)


def speculative_loop(draft: int | None):
    """The `custom_generate` callable for one call (transformers passes it the prepared arguments)."""
    return partial(decode_speculatively, draft=draft)
