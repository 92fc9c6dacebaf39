"""Batched hidden-state collection for the analyses, keeping only what they need.

Storing every layer's states of all models is what makes naive analysis scripts run out of
memory (GPT-2 small: 12 layers x 3 models x 768 floats per token). Here only the requested layers
keep per-token states; the statistics that need every layer (mean state, mean |activation|,
L2 distances between models) are accumulated as running sums while the batches stream past.

Layer l means "the state after decoder layer l" (0-based), for every model: the superposed model's
state after blend + autoencoder, and each stack's own state when it runs alone. The models are named by
`model_labels`: "superposed", "base" and "expert" for a one-expert run (the paper's three), the experts'
own names when there are several.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from superpose.data.text import collate

__all__ = ["MODELS", "PAIRS", "CONTEXT_WINDOW", "DomainStates", "collect_states", "pair_name", "model_labels",
           "model_pairs"]

CONTEXT_WINDOW = 8  # a token's context: the window of up to this many token ids ending at it


def model_labels(expert_names: list[str]) -> tuple[str, ...]:
    """Names of the analysed models: the superposed model, then each stack alone (base first).

    One expert keeps the generic name "expert", so one-expert analyses read as before; several are told
    apart by their own names."""
    if len(expert_names) == 1:
        return ("superposed", "base", "expert")
    if "superposed" in expert_names:
        raise ValueError("an expert named 'superposed' would clash with the superposed model in the analysis")
    return ("superposed", "base", *expert_names)


def model_pairs(labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Pairs whose hidden-state distance is tracked: each stack to the superposed model, then base to each expert."""
    stacks = labels[1:]
    return (*((s, "superposed") for s in stacks), *(("base", e) for e in stacks[1:]))


MODELS = model_labels(["expert"])
PAIRS = model_pairs(MODELS)  # base–superposed, expert–superposed, base–expert


def pair_name(a: str, b: str) -> str:
    """Label of a model pair, e.g. 'base–superposed' (en dash, as in the distance plot)."""
    return f"{a}–{b}"


@dataclass
class DomainStates:
    """Everything collected for one input domain; rows of every per-token array refer to the same tokens."""

    n_sequences: int
    n_layers: int
    token_ids: np.ndarray  # (N,) id of each real (unpadded) token
    contexts: list[tuple[int, ...]]  # N windows of up to CONTEXT_WINDOW ids ending at each token
    states: dict[int, dict[str, np.ndarray]]  # requested layer -> model -> (N, d) float32
    mean_state: dict[str, np.ndarray]  # model -> (L, d) mean state over tokens, per layer
    mean_abs: dict[str, np.ndarray]  # model -> (L,) mean |activation| over tokens and dimensions
    l2: dict[str, np.ndarray]  # pair name -> (L,) mean over tokens of ||h_a - h_b||_2
    models: tuple[str, ...] = MODELS  # the keys of `states[layer]`, `mean_state` and `mean_abs`, in order

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])


@dataclass
class _RunningSums:
    """Per-layer sums over tokens, in float64 so the means do not depend on batching."""

    n_layers: int
    hidden: int
    models: tuple[str, ...] = MODELS
    tokens: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (L, d) sum of states
    abs_sum: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (L,) sum of |a|
    dist: dict[str, np.ndarray] = field(default_factory=dict)  # pair -> (L,) sum of token distances

    def __post_init__(self) -> None:
        for model in self.models:
            self.state[model] = np.zeros((self.n_layers, self.hidden))
            self.abs_sum[model] = np.zeros(self.n_layers)
        for a, b in model_pairs(self.models):
            self.dist[pair_name(a, b)] = np.zeros(self.n_layers)

    def add(self, layer: int, by_model: dict[str, torch.Tensor]) -> None:
        """Add one layer's real-token states `(n, d)` of every model."""
        for model, h in by_model.items():
            self.state[model][layer] += h.sum(0).double().numpy()
            self.abs_sum[model][layer] += float(h.abs().double().sum())
        for a, b in model_pairs(self.models):
            diff = (by_model[a] - by_model[b]).double()  # (n, d)
            self.dist[pair_name(a, b)][layer] += float(diff.norm(dim=1).sum())

    def means(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        n = max(self.tokens, 1)
        mean_state = {m: s / n for m, s in self.state.items()}  # (L, d)
        mean_abs = {m: s / (n * self.hidden) for m, s in self.abs_sum.items()}  # (L,)
        l2 = {p: s / n for p, s in self.dist.items()}  # (L,)
        return mean_state, mean_abs, l2


def _contexts(input_ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, ...]]:
    """Context window of every real token, row by row (the same order as `states[mask]`)."""
    out = []
    for ids, valid in zip(input_ids.tolist(), mask.bool().tolist()):
        for t, real in enumerate(valid):
            if real:
                out.append(tuple(ids[max(0, t - CONTEXT_WINDOW + 1): t + 1]))
    return out


def _layer_states(model, input_ids: torch.Tensor, mask: torch.Tensor,
                  models: tuple[str, ...]) -> dict[str, list[torch.Tensor]]:
    """State after every decoder layer, per model: model name -> L tensors `(B, T, d)`."""
    out = model(input_ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
    superposed = list(out.hidden_states[1:])  # drop the embeddings: L states
    alone = model.independent_states(input_ids, mask)  # M lists of L states, base first
    return {"superposed": superposed, **{name: list(states) for name, states in zip(models[1:], alone)}}


def _collect_domain(model, blocks: list[torch.Tensor], layers: list[int], batch_size: int, pad_id: int,
                    bar) -> DomainStates:
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    models = model_labels(model.config.expert_names)
    sums = _RunningSums(n_layers, hidden, models)
    kept: dict[int, dict[str, list[np.ndarray]]] = {layer: {m: [] for m in models} for layer in layers}
    token_ids: list[np.ndarray] = []
    contexts: list[tuple[int, ...]] = []
    device = next(model.parameters()).device
    for start in range(0, len(blocks), batch_size):
        batch = collate(blocks[start:start + batch_size], [0] * len(blocks[start:start + batch_size]), pad_id)
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)  # (B, T)
        valid = mask.bool()  # (B, T)
        per_model = _layer_states(model, ids, mask, models)
        for layer in range(n_layers):
            real = {m: per_model[m][layer][valid].float().cpu() for m in models}  # (n, d) each
            sums.add(layer, real)
            if layer in kept:
                for m in models:
                    kept[layer][m].append(real[m].numpy())
        sums.tokens += int(valid.sum())
        token_ids.append(batch.input_ids[batch.attention_mask.bool()].numpy())
        contexts.extend(_contexts(batch.input_ids, batch.attention_mask))
        bar.update(1)
    mean_state, mean_abs, l2 = sums.means()
    states = {layer: {m: np.concatenate(parts).astype(np.float32) for m, parts in by_model.items()}
              for layer, by_model in kept.items()}
    return DomainStates(len(blocks), n_layers, np.concatenate(token_ids), contexts, states, mean_state, mean_abs, l2,
                        models)


def collect_states(
    model,
    blocks_by_domain: dict[str, list[torch.Tensor]],
    layers: list[int],
    batch_size: int = 8,
    pad_id: int = 0,
    progress: bool = True,
) -> dict[str, DomainStates]:
    """Run the superposed model and each stack alone over each domain's blocks and gather the analysis inputs.

    `blocks_by_domain[domain]` is a list of 1-D token-id tensors (one sequence each); `layers` are the
    0-based decoder layers whose per-token states are kept. Padding never enters any statistic.
    """
    n_layers = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a model of {n_layers} layers (0-based)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    empty = [name for name, blocks in blocks_by_domain.items() if not blocks]
    if empty:
        raise ValueError(f"no sequences for domain(s) {empty}")
    total = sum(-(-len(blocks) // batch_size) for blocks in blocks_by_domain.values())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=total, desc="hidden states", unit="batch", disable=not progress) as bar:
            return {
                domain: _collect_domain(model, blocks, sorted(set(layers)), batch_size, pad_id, bar)
                for domain, blocks in blocks_by_domain.items()
            }
    finally:
        model.train(was_training)
