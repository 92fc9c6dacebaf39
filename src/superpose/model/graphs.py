"""The superposed model's two forward graphs, as public functions of (model, token ids, positions, cache).

* `sequential`: one shared running state; at each layer every stack's block reads the blended state, the
  blend mixes their outputs, an autoencoder may follow (the paper's superposition).
* `parallel`: each stack runs alone on its own states (`run_stacks`, one cache per stack); a side path reads
  their layer-l states and blends them into its own running state. It is the `dynamic` preset's graph.

`head_logits` turns a graph's result into next-token logits. The model's `forward`, its training losses and
speculative decoding all call these, so a graph is defined once. Every function takes the positions it scores
and a `SuperposedCache` (or None): speculative decoding verifies drafts at given positions, and replays the
side path over kept positions from recorded stack outputs without running a stack again.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from superpose.core.mixtures import mix
from superpose.model.evidence import stack_evidence


@dataclass
class GraphResult:
    """`states`: the running state after the embedding and after each layer (float32); `gates`: each layer's
    per-stack weights (B, T, M); `head_inputs`/`head_logits`: what the heads read under `head: mixture` (None
    when the heads read the last state), see `head_logits`."""

    states: list[torch.Tensor]
    gates: list[torch.Tensor]
    head_inputs: list[torch.Tensor] | None = None
    head_logits: list[torch.Tensor] | None = None

    def keep_last(self, count: int) -> GraphResult:
        """Only the last `count` positions of what the head reads (`logits_to_keep`)."""
        if not count:
            return self
        return GraphResult(
            self.states[:-1] + [self.states[-1][:, -count:]], self.gates[:-1] + [self.gates[-1][:, -count:]],
            [h[:, -count:] for h in self.head_inputs] if self.head_inputs else None,
            [lg[:, -count:] for lg in self.head_logits] if self.head_logits else None)


def mix_states(outputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Σ_m w[..., m, :] * outputs[m] in float32 on the first output's device (a device map may split stacks)."""
    home = outputs[0].device
    weights = weights.to(home)
    mixed = weights[..., 0, :] * outputs[0].float()
    for m in range(1, len(outputs)):
        mixed = mixed + weights[..., m, :] * outputs[m].float().to(home)
    return mixed


def embed(model, input_ids: torch.Tensor, position_ids: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """(B, T, d) float32: the base's embedding, or (`embed_blend: mixture`) the stacks' embeddings mixed by their
    layer-averaged static weights."""
    base_embeds = model.stacks[0].embed(input_ids, position_ids).float()
    if model.settings.embed_blend == "base":
        return base_embeds
    weights = static.mean(0)  # (M,) or (M, d): each stack's weight, averaged over layers
    weights = weights.unsqueeze(-1) if weights.dim() == 1 else weights
    embeds = [base_embeds] + [stack.embed(input_ids, position_ids) for stack in model.stacks[1:]]
    return mix_states(embeds, weights)


def own_log_probs(model, stack_states: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Each stack's head on its own last state, as float32 log-probabilities (no gradient: the stacks are
    frozen): the parallel graph's evidence and mixture head both read these, computed once."""
    with torch.no_grad():
        return [own_log_prob(stack, states[-1]) for stack, states in zip(model.stacks, stack_states)]


def own_log_prob(stack, last_state: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(stack.logits(last_state).float(), dim=-1)


def head_logits(model, result: GraphResult, static: torch.Tensor) -> torch.Tensor:
    """(B, T, V) next-token logits from a graph's result under the model's `head` setting."""
    head = model.settings.head
    hidden = result.states[-1].to(model.stack_dtype)
    if head in ("base", "first_expert"):
        return model.stacks[0 if head == "base" else 1].logits(hidden)
    if head == "blend":
        weights = static.reshape(static.shape[0], static.shape[1], -1).mean(dim=(0, 2))  # (M,)
        return mix_states([stack.logits(hidden) for stack in model.stacks], weights[:, None])
    # mixture: log Σ_m w[last, t, m] softmax(head_m(norm_m(h_m))), a proper log-probability
    logits = result.head_logits
    if logits is None:  # (given ones are the parallel graph's log-probabilities)
        inputs = result.head_inputs or [hidden] * len(model.stacks)
        logits = [own_log_prob(stack, h.to(model.stack_dtype)) for stack, h in zip(model.stacks, inputs)]
    log_w = torch.log(result.gates[-1].clamp(min=1e-30))  # (B|1, T|1, M)
    return mix(logits, log_w.movedim(-1, 0))


def _autoencode(model, layer: int, hidden: torch.Tensor, token_mask, cache) -> torch.Tensor:
    state = cache.conv_states.get(layer) if cache is not None else None
    out, new_state = model.autoencoders[str(layer)](hidden, _on(token_mask, hidden.device), state)
    if cache is not None:
        cache.conv_states[layer] = new_state
    out = out.float()  # under bf16 autocast the AE computes in bf16; the running state stays float32
    return hidden + out if model.settings.ae_residual else out


def _per_stack(weights: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """(B|1, T|1, M, k) -> (B, T, M): each stack's weight, averaged over the hidden size (2d)."""
    return weights.mean(-1).expand(batch, length, -1)


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return tensor.to(device) if tensor is not None and tensor.device != device else tensor


def sequential(model, input_ids: torch.Tensor, position_ids: torch.Tensor, cache=None,
               attention_mask: torch.Tensor | None = None, static: torch.Tensor | None = None,
               record: list | None = None, stored: list | None = None) -> GraphResult:
    """The shared running state through every layer.

    `record` (a list) receives each layer's stack outputs; `stored` gives them instead of running the layers:
    speculative decoding replays the side path (evidence, gates, autoencoders) over the positions a rejected
    draft kept, without running any stack again (causal: their outputs do not change)."""
    static = model.static_weights() if static is None else static
    batch, length = input_ids.shape
    token_mask = attention_mask[:, -length:] if attention_mask is not None else None
    hidden = embed(model, input_ids, position_ids, static)
    stack_caches = cache.stacks if cache is not None else [None] * len(model.stacks)
    if stored is None:
        contexts = [stack.prepare(hidden.to(model.stack_dtype), attention_mask, position_ids, stack_cache)
                    for stack, stack_cache in zip(model.stacks, stack_caches)]
    states, gates = [hidden], []
    for layer in range(static.shape[0]):
        x = hidden.to(model.stack_dtype)
        if stored is not None:
            outputs = stored[layer]
        else:
            outputs = [stack.run_layer(layer, x, context, stack_cache)
                       for stack, context, stack_cache in zip(model.stacks, contexts, stack_caches)]
        if record is not None:
            record.append(outputs)
        # the evidence at layer l reads each stack's own head on its layer-l output (positions < t score x_≤t)
        evidence = stack_evidence(model, layer, input_ids, token_mask, cache, outputs=outputs)
        weights = model.blend.weights(layer, static, hidden, evidence)  # (B|1, T|1, M, k)
        hidden = mix_states(outputs, weights)
        if layer in model.ae_layers:
            hidden = _autoencode(model, layer, hidden, token_mask, cache)
        states.append(hidden)
        gates.append(_per_stack(weights, batch, length))
    return GraphResult(states, gates)


def run_stacks(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None, cache=None,
               attention_mask: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
    """Each stack alone on its own states (and its own cache in `cache`): the state after every layer, per
    stack, base first."""
    stack_caches = cache.stacks if cache is not None else [None] * len(model.stacks)
    return [stack.run_stack(input_ids, attention_mask, position_ids, stack_cache)
            for stack, stack_cache in zip(model.stacks, stack_caches)]


def parallel(model, stack_states: list[list[torch.Tensor]], input_ids: torch.Tensor, position_ids: torch.Tensor,
             cache=None, token_mask: torch.Tensor | None = None, static: torch.Tensor | None = None,
             own_logits: list[torch.Tensor] | None = None) -> GraphResult:
    """The side path over the stacks' own states: at each layer the gate reads the side path's previous state,
    the blend mixes the stacks' layer-l states, an autoencoder may follow.

    Under `head: mixture` each head reads its own stack's last state plus the last autoencoder's correction
    of the blend, so with no autoencoder after the last layer the model mixes the experts' own next-token
    distributions; those heads' log-probabilities are then the evidence's, computed once (or given as
    `own_logits`: speculative decoding reuses the drafter's)."""
    static = model.static_weights() if static is None else static
    batch, length = input_ids.shape
    hidden = embed(model, input_ids, position_ids, static)
    if own_logits is None and (model.blend.uses_evidence or model.settings.head == "mixture"):
        own_logits = own_log_probs(model, stack_states)
    evidence = stack_evidence(model, "parallel", input_ids, token_mask, cache, log_probs=own_logits)
    states, gates = [hidden], []
    for layer in range(static.shape[0]):
        outputs = [states_m[layer] for states_m in stack_states]
        weights = model.blend.weights(layer, static, hidden.to(outputs[0].device), evidence)
        blended = hidden = mix_states(outputs, weights)
        if layer in model.ae_layers:
            hidden = _autoencode(model, layer, hidden, token_mask, cache)
        states.append(hidden)
        gates.append(_per_stack(weights, batch, length))
    if model.settings.head == "mixture" and static.shape[0] - 1 not in model.ae_layers:
        return GraphResult(states, gates, None, own_logits)  # the heads read the stacks' own states
    correction = hidden - blended  # zero unless an autoencoder follows the last layer
    return GraphResult(states, gates, [out.float().to(hidden.device) + correction for out in outputs], None)
