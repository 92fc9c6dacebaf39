"""The paper's hard merge (§3.3.1): theta_l = Σ_m w̄_{l,m} theta_l^m, each layer merged with its own mean weights.

With one expert this is (1 - alpha(l)) theta_l^base + alpha(l) theta_l^expert. Per-token gates cannot be
folded into weights, so their static prior is used. Written as a plain Hugging Face checkpoint that loads
with no project code.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from superpose.compare.linear import weighted_merge
from superpose.model.model_card import one_stack_card, write_card
from superpose.model.superposed import SuperposedModel


def layer_weights(model: SuperposedModel) -> list[list[float]]:
    """Per layer, each stack's static weight (2d: averaged over the hidden size)."""
    with torch.no_grad():
        static = model.static_weights().float()  # (L, M) or (L, M, d)
    return static.reshape(static.shape[0], static.shape[1], -1).mean(-1).tolist()


def off_base_weights(model: SuperposedModel) -> list[float]:
    """One scalar per layer: the weight off the base (with one expert, the paper's alpha)."""
    return [1.0 - weights[0] for weights in layer_weights(model)]


def _end_weights(model: SuperposedModel, per_layer: list[list[float]]) -> tuple[list[float], list[float]]:
    """The stacks' weights for the embeddings and for the final norm + head."""
    stacks = len(per_layer[0])
    mean = [sum(layer[m] for layer in per_layer) / len(per_layer) for m in range(stacks)]
    one_hot = [[1.0 if m == k else 0.0 for m in range(stacks)] for k in range(stacks)]
    embed = mean if model.settings.embed_blend == "mean_weights" else one_hot[0]
    head = {"base": one_hot[0], "first_expert": one_hot[1], "blend": mean,
            "mixture": per_layer[-1]}[model.settings.head]
    return embed, head


def hard_merge_state_dict(model: SuperposedModel) -> dict[str, torch.Tensor]:
    """θ^key = Σ_m w_m θ_m^key with the weights of the key's part (embeddings, a layer, final norm and head):
    the `linear` merge's weighted sum, each key with its own weights."""
    base_stack = model.stacks[0]
    per_layer = layer_weights(model)
    embed, head = _end_weights(model, per_layer)
    tied = bool(getattr(model.base.config, "tie_word_embeddings", False))
    if tied and head != embed:
        warnings.warn(f"the checkpoint ties its LM head to its input embeddings, so the exported head takes the "
                      f"embeddings' mix {[round(w, 3) for w in embed]} instead of {[round(w, 3) for w in head]}",
                      UserWarning, stacklevel=2)
    layer_prefixes = [(base_stack.layer_prefix(i), w) for i, w in enumerate(per_layer)]

    def weights_of(key: str) -> list[float] | None:
        if key.startswith(tuple(base_stack.embedding_prefixes())):
            return embed
        if key.startswith(tuple(base_stack.final_prefixes())):
            # a tied head is the embedding matrix; the final norm is never tied and follows `head`
            return embed if tied and key.startswith("lm_head.") else head
        return next((w for prefix, w in layer_prefixes if key.startswith(prefix)), None)

    return weighted_merge([stack.state_dict() for stack in model.stack_models], weights_of)


def export_hard_merge(model: SuperposedModel, out_dir: str | Path, tokenizer=None,
                      run_dir: str | Path | None = None) -> Path:
    """Save the hard-merged model (and tokenizer) to `out_dir`; autoencoders cannot be folded in and are dropped.

    A model card (`README.md`) names the source stacks, the per-layer weights and, from `run_dir`, the data."""
    out_dir = Path(out_dir)
    merged_model = copy.deepcopy(model.base)
    merged = hard_merge_state_dict(model)
    merged_model.load_state_dict(merged, strict=True)
    merged_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    write_card(out_dir, _merge_card(model, run_dir))
    return out_dir


def _merge_card(model: SuperposedModel, run_dir: str | Path | None) -> str:
    per_layer = layer_weights(model)
    embed, head = _end_weights(model, per_layer)
    summary = ("The paper's hard merge (§3.3.1) of a superposed model: each layer's weights are the stacks' weights "
               "mixed by that layer's static blend weights, written as one plain checkpoint "
               "(`AutoModelForCausalLM.from_pretrained(folder)` with `transformers` alone). Per-token gates and "
               "autoencoders cannot be folded into weights and are not part of it.")
    weights = {"stacks": model.stack_names, "per_layer_weights": [[round(w, 4) for w in ws] for ws in per_layer],
               "embedding_weights": [round(w, 4) for w in embed], "head_weights": [round(w, 4) for w in head],
               "model_settings": model.config.settings}
    return one_stack_card(kind="hard-merge", run_dir=run_dir, config=model.config, summary=summary,
                          settings=weights, data={})
