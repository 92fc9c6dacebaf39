"""Speculative superposition: the dense model's exact output at close to one stack's cost (issue 15).

On most text the gate puts nearly all the weight on one stack. That stack (the heaviest at the current
position) drafts k tokens alone, with its own cache; one verification pass then runs the other stacks over
the drafted tokens (a batched prefill from their caches), computes the side path (evidence, gates,
autoencoders) and the dense model's next-token distribution at every drafted position, reusing the drafter's
states and logits. The longest prefix the dense model would have produced is kept:

* greedy: a drafted token is kept while it is the dense argmax; the first mismatch is replaced by it;
* sampling (temperature, top-k, top-p): speculative rejection sampling. Token y drawn from the drafter's q
  is kept with probability min(1, p(y) / q(y)), else the token comes from the normalised residual
  max(0, p - q), so every token is distributed exactly as the dense model's p.

After a rejection every stack's KV cache is cropped to the kept length and the side states (evidence,
convolution history) are restored and replayed over the kept positions, so decoding goes on exactly as a
dense run would. In the sequential graph no stack runs alone inside the model, so the drafter is that
stack as a standalone model with its own cache, and the full model verifies.

The draft length is fixed or adaptive (longer after a fully kept draft, shorter after a rejection); where
drafts are rarely kept (a static blend, whose output is no single stack's) decoding backs off to dense steps
for a while and probes again later, so speculation does not make generation slower.
`SuperposedModel.generate` calls `generate_speculatively` for batch-1 greedy and sampled decoding; beams,
batches and other logits processors fall back to `transformers`' dense decoding.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

START_LENGTH = 6  # adaptive draft length: first guess
MAX_LENGTH = 16  # adaptive draft length: ceiling
MIN_ACCEPTANCE = 0.4  # below this kept share of drafted tokens, dense steps are cheaper: back off
PROBE_TOKENS = 16  # drafted tokens to judge the acceptance on before backing off (fewer: one early miss backs off)
BACKOFF_TOKENS = 16  # dense tokens after a poor probe; doubles after each poor probe (up to MAX_BACKOFF)
MAX_BACKOFF = 256

# GenerationConfig fields whose non-default value needs a logits processor or search this module does not run.
_UNSUPPORTED = {
    "num_beams": (None, 1), "num_return_sequences": (None, 1), "num_beam_groups": (None, 1),
    "return_dict_in_generate": (None, False), "output_scores": (None, False), "output_logits": (None, False),
    "output_attentions": (None, False), "output_hidden_states": (None, False), "use_cache": (None, True),
    "repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "encoder_repetition_penalty": (None, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "force_words_ids": (None,),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "sequence_bias": (None,), "min_p": (None,), "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,), "guidance_scale": (None, 1.0),
    "stop_strings": (None,), "penalty_alpha": (None,), "diversity_penalty": (None, 0.0), "dola_layers": (None,),
    "prompt_lookup_num_tokens": (None,), "watermarking_config": (None,), "max_time": (None,),
    "exponential_decay_length_penalty": (None,), "renormalize_logits": (None, False), "constraints": (None,),
    "assistant_early_exit": (None,), "low_memory": (None, False),
}
# generate() arguments that hook into dense decoding (any given one means: decode densely)
_HOOKS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus", "assistant_model",
          "streamer", "negative_prompt_ids", "negative_prompt_attention_mask", "assistant_tokenizer", "tokenizer",
          "custom_generate")


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
                f"{self.dense_tokens} dense steps, {self.stack_steps_per_token or 0:.2f} stack steps per token")


@dataclass
class DecodingRules:
    """The dense decoding to reproduce: greedy or sampling with `transformers`' own warpers."""

    do_sample: bool
    eos: tuple[int, ...]
    min_new_tokens: int = 0
    warpers: tuple = ()

    def scores(self, logits: torch.Tensor, produced: int) -> torch.Tensor:
        """(T, V) logits of T successive positions, the first after `produced` new tokens -> (T, V) float32
        scores as `transformers` processes them (min-new-tokens mask, then temperature, top-k, top-p)."""
        scores = logits.float()
        blocked = self.min_new_tokens - produced  # rows still before min_new_tokens may not end the text
        if blocked > 0 and self.eos:
            scores = scores.clone()
            scores[:blocked, list(self.eos)] = -float("inf")
        if self.do_sample:
            for warper in self.warpers:
                scores = warper(None, scores)
        return scores

    def choose(self, scores: torch.Tensor) -> int:
        """One token from (V,) processed scores: the argmax, or a draw from their softmax."""
        if not self.do_sample:
            return int(scores.argmax())
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1))


class DraftLength:
    """Fixed k, or adaptive: +2 after a fully kept draft (up to MAX_LENGTH), halfway to the kept run after a
    rejection (at least 2).

    Either way, when fewer than MIN_ACCEPTANCE of the last PROBE_TOKENS drafted tokens were kept, the next
    BACKOFF_TOKENS tokens are decoded densely (0 = a dense step), then drafting is probed again."""

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.length = fixed or START_LENGTH
        self.dense_left = 0
        self.backoff = BACKOFF_TOKENS
        self.window = [0, 0]  # drafted, accepted since the last judgement

    def next(self, remaining: int) -> int:
        if self.dense_left > 0:
            self.dense_left -= 1
            return 0
        return max(0, min(self.length, remaining - 1))

    def update(self, drafted: int, accepted: int) -> None:
        if self.fixed is None:
            self.length = (min(self.length + 2, MAX_LENGTH) if accepted == drafted
                           else max(2, (self.length + accepted + 1) // 2))
        self.window[0] += drafted
        self.window[1] += accepted
        if self.window[0] >= PROBE_TOKENS:
            if self.window[1] < MIN_ACCEPTANCE * self.window[0]:
                self.dense_left, self.backoff = self.backoff, min(2 * self.backoff, MAX_BACKOFF)
                self.length = self.fixed or START_LENGTH
            else:
                self.backoff = BACKOFF_TOKENS
            self.window = [0, 0]


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


def accept_sampled(dense_scores: torch.Tensor, draft_scores: torch.Tensor, drafted: list[int]) -> tuple[int, int]:
    """Speculative rejection sampling: (k+1, V) dense scores, (k, V) scores the drafts were drawn from ->
    (kept drafts, the next token), each token distributed exactly as the dense model's."""
    p = torch.softmax(dense_scores.double(), dim=-1)
    q = torch.softmax(draft_scores.double(), dim=-1)
    for i, token in enumerate(drafted):
        if float(torch.rand(())) >= acceptance_probability(p[i], q[i], token):
            return i, int(torch.multinomial(residual(p[i], q[i]), 1))
    return len(drafted), int(torch.multinomial(p[len(drafted)], 1))


class SpeculativeDecoder:
    """Batch-1 decoding of one prompt: a cache holding every stack, a pending token not yet in it, and the
    draft-verify-rollback rounds."""

    def __init__(self, model, prompt: list[int], rules: DecodingRules, draft: DraftLength,
                 stats: SpeculationStats):
        self.model, self.rules, self.draft, self.stats = model, rules, draft, stats
        self.tokens = list(prompt)
        self.prompt_length = len(prompt)
        self.device = model.device
        self.cache = model.new_cache()
        self.parallel = model.settings.graph == "parallel"
        self.own_logits = model.blend.uses_evidence or model.settings.head == "mixture"
        self.standalone: dict[int, DynamicCache] = {}  # sequential graph: each drafter's own cache
        self.drafter = 0

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
        self.drafter = int(weights.float().argmax())

    # ---- decoding ----------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, max_new_tokens: int) -> list[int]:
        self._prefill()
        while self.produced < max_new_tokens:
            length = self.draft.next(max_new_tokens - self.produced)
            new = self._dense_step() if length == 0 else self._round(length)
            if self.rules.eos and any(t in self.rules.eos for t in new):
                new = new[: next(i for i, t in enumerate(new) if t in self.rules.eos) + 1]
                self.tokens.extend(new)
                break
            self.tokens.extend(new[: max_new_tokens - self.produced])
        self.stats.new_tokens = self.produced
        return self.tokens

    def _prefill(self) -> None:
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
        return [self.rules.choose(self.rules.scores(out.logits[0, -1:], self.produced)[0])]

    def _round(self, length: int) -> list[int]:
        drafted, draft_scores, drafter_out = self._draft(length)
        snapshot = self.cache.side_states()
        dense_logits, gates, replay = self._verify(drafted, drafter_out)  # (k+1, V), (k+1, M)
        dense_scores = self.rules.scores(dense_logits, self.produced)
        if self.rules.do_sample:
            kept, token = accept_sampled(dense_scores, draft_scores, drafted)
        else:
            kept, token = accept_greedy(dense_scores, drafted)
        self.stats.rounds += 1
        self.stats.drafted += len(drafted)
        self.stats.accepted += kept
        self.draft.update(len(drafted), kept)
        if kept < len(drafted):
            self._rollback(len(drafted) - kept, snapshot, replay, kept + 1)
        self._pick_drafter(gates[kept])
        return drafted[:kept] + [token]

    # ---- draft ---------------------------------------------------------------------------------------

    def _draft(self, length: int):
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
                logits.append(torch.log_softmax(stack.logits(out[-1]).float(), dim=-1))  # (1, 1, V) log-probs
                if i == length:
                    break
                drafted.append(self._propose(logits[-1][0], scores))
                feed = drafted[-1:]
                if self.rules.eos and drafted[-1] in self.rules.eos:
                    length = i + 1
            self.stats.stack_steps += len(drafted) + 1
            layers = [torch.cat([s[layer] for s in states], dim=1) for layer in range(len(states[0]))]
            return drafted, torch.cat(scores), (layers, torch.cat(logits, dim=1))
        kv = self.standalone.setdefault(self.drafter, DynamicCache(config=stack.config))
        seen = kv.get_seq_length()
        feed = self.tokens[seen:]  # catch up on everything since this stack last drafted, in one pass
        for i in range(length):
            out = stack.run_stack(self._ids(feed), None, self._positions(seen, len(feed)), kv)
            seen += len(feed)
            drafted.append(self._propose(stack.logits(out[-1][:, -1:])[0], scores))
            feed = drafted[-1:]
            if self.rules.eos and drafted[-1] in self.rules.eos:
                break
        self.stats.stack_steps += len(drafted)
        return drafted, torch.cat(scores), None

    def _propose(self, logits: torch.Tensor, scores: list[torch.Tensor]) -> int:
        """(1, V) drafter logits of the next draft -> its token; its processed scores are kept as q."""
        processed = self.rules.scores(logits, self.produced + len(scores))
        scores.append(processed)
        return self.rules.choose(processed[0])

    # ---- verify ------------------------------------------------------------------------------------

    def _verify(self, drafted: list[int], drafter_out):
        """The dense model over the pending token and the drafts -> ((k+1, V) logits, (k+1, M) last-layer
        weights, what a rollback needs to replay the side path)."""
        model, ids = self.model, self._ids(self.tokens[-1:] + drafted)  # (1, k+1)
        start = len(self.tokens) - 1
        positions = self._positions(start, ids.shape[1])
        if not self.parallel:
            out = model(ids, cache=self.cache, use_cache=True, output_gates=True)
            self.stats.stack_steps += len(model.stacks)
            return out.logits[0], out.gate_weights[-1][0], ids
        layers, drafter_logits = drafter_out
        stack_states, own = [], []
        for m, stack in enumerate(model.stacks):  # the other stacks: one batched pass each, from their caches
            if m == self.drafter:
                states, logits = layers, drafter_logits
            else:
                states = stack.run_stack(ids, None, positions, self.cache.stacks[m])
                # log-probabilities, as the model's side path takes them (`SuperposedModel._side_path`)
                logits = torch.log_softmax(stack.logits(states[-1]).float(), dim=-1) if self.own_logits else None
            stack_states.append(states)
            own.append(logits)
        self.stats.stack_steps += len(model.stacks) - 1
        own = own if self.own_logits else None
        static = model.static_weights()
        states, gates, head_inputs, head_logits = model._side_path(stack_states, ids, positions, None, self.cache,
                                                                   static, own_logits=own)
        logits = model._logits(states[-1], static, gates[-1], head_inputs, head_logits)  # (1, k+1, V)
        return logits[0], gates[-1][0], (stack_states, own, ids, positions, static)

    # ---- roll back ---------------------------------------------------------------------------------

    def _rollback(self, rejected: int, snapshot, replay, kept_positions: int) -> None:
        """Forget the rejected drafts: crop every stack's cache, and put the side states (evidence, convolution
        history) back to where they were after the kept positions."""
        self.cache.crop_stacks(rejected)
        if not self.parallel:
            self._sync_standalone()
            if self.cache.has_side_states():  # their history is inside the layers: run the kept positions again
                self.cache.crop_stacks(kept_positions)
                self.cache.restore_side_states(snapshot)
                self.model(replay[:, :kept_positions], cache=self.cache, use_cache=True)
                self.stats.stack_steps += len(self.model.stacks)
            return
        if self.cache.has_side_states():  # the stacks' states are known: replay the side path alone
            stack_states, own, ids, positions, static = replay
            self.cache.restore_side_states(snapshot)
            self.model._side_path([[s[:, :kept_positions] for s in states] for states in stack_states],
                                  ids[:, :kept_positions], positions[:, :kept_positions], None, self.cache, static,
                                  own_logits=None if own is None else [lg[:, :kept_positions] for lg in own])

    def _sync_standalone(self) -> None:
        """Sequential graph: drop the drafter's cached positions beyond what is kept (pending token + kept)."""
        kv = self.standalone.get(self.drafter)
        valid = self.cache.get_seq_length()
        if kv is not None and kv.get_seq_length() > valid:
            kv.crop(-(kv.get_seq_length() - valid))


# ---- the generate() entry point ---------------------------------------------------------------------


def _draft_mode(speculative) -> int | None | str:
    """"auto"/None -> None (adaptive), an integer K >= 0 -> K; anything else is an error."""
    if speculative is None or speculative == "auto":
        return None
    if isinstance(speculative, bool) or not isinstance(speculative, int) or speculative < 0:
        raise ValueError(f"speculative must be 'auto' or a number of drafted tokens >= 0; got {speculative!r}")
    return speculative


def _plan(model, args: tuple, kwargs: dict, fixed):
    """(prompt ids, max new tokens, rules) when speculative decoding reproduces this call exactly, else the
    reason it falls back to dense decoding."""
    if fixed == 0:
        return "speculative=0"
    if len(args) > 2:
        return "positional generate() arguments beyond the inputs and generation config"
    kwargs = dict(kwargs)
    inputs = args[0] if args else None
    for name in ("inputs", "input_ids"):
        inputs = kwargs.pop(name, None) if inputs is None else inputs
    config = args[1] if len(args) > 1 else kwargs.pop("generation_config", None)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.shape[0] != 1 or inputs.shape[1] == 0:
        return "not a batch of one prompt"
    if any(kwargs.pop(name, None) is not None for name in _HOOKS):
        return "a logits processor, stopping criterion, streamer or assistant was given"
    mask = kwargs.pop("attention_mask", None)
    if mask is not None and not bool(mask.bool().all()):
        return "the prompt is padded"
    if model.settings.conv_padding == "symmetric" and model.ae_layers:
        return "symmetric convolutions read the next token"
    if any(getattr(m.config, "sliding_window", None) for m in model.stack_models):
        return "sliding-window caches cannot be rolled back"
    config = copy.deepcopy(config if config is not None else model.generation_config)
    unused = config.update(**kwargs)
    unused.pop("pad_token_id", None)
    if unused:
        return f"unsupported generate() arguments {sorted(unused)}"
    for name, allowed in _UNSUPPORTED.items():
        if getattr(config, name, None) not in allowed:
            return f"{name}={getattr(config, name)!r}"
    prompt_length = inputs.shape[1]
    if config.max_new_tokens is not None:
        new = config.max_new_tokens
    else:
        new = (config.max_length or 20) - prompt_length  # transformers' default max_length is 20
    if new <= 0:
        return "nothing to generate"
    eos = config.eos_token_id
    eos = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
    min_new = max(config.min_new_tokens or 0, (config.min_length or 0) - prompt_length)
    warpers = []
    if config.do_sample:
        if config.temperature is not None and config.temperature <= 0:
            return "temperature <= 0"
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    rules = DecodingRules(bool(config.do_sample), eos, min_new, tuple(warpers))
    return inputs, new, rules


def generate_speculatively(model, args: tuple, kwargs: dict, speculative="auto") -> torch.Tensor | None:
    """`model.generate(*args, **kwargs)` decoded speculatively: (1, prompt + new) token ids, the same as dense
    decoding (token for token when greedy, in distribution when sampling); None when the call needs dense
    decoding (the reason is in `model.speculation_stats`)."""
    fixed = _draft_mode(speculative)
    plan = _plan(model, args, kwargs, fixed)
    if isinstance(plan, str):
        model.speculation_stats = SpeculationStats(mode="dense", reason=plan)
        return None
    inputs, max_new_tokens, rules = plan
    stats = SpeculationStats()
    tick = time.perf_counter()
    decoder = SpeculativeDecoder(model, inputs[0].tolist(), rules, DraftLength(fixed), stats)
    tokens = decoder.run(max_new_tokens)
    stats.seconds = time.perf_counter() - tick
    model.speculation_stats = stats
    return torch.tensor([tokens], dtype=inputs.dtype, device=inputs.device)
