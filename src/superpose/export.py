"""The paper's hard merge (§3.3.1): theta_l = (1 - alpha(l)) theta_l^base + alpha(l) theta_l^expert.

Written as a plain Hugging Face checkpoint that loads with no project code.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from .modeling import SuperposedModel


def layer_alphas(model: SuperposedModel) -> list[float]:
    """One scalar per layer (2d alpha: each layer's mean)."""
    with torch.no_grad():
        alpha = model.alphas().float()
    return [float(a.mean()) for a in alpha]


def hard_merge_state_dict(model: SuperposedModel) -> dict[str, torch.Tensor]:
    base_stack = model.stacks[0]
    alphas = layer_alphas(model)
    mean_alpha = sum(alphas) / len(alphas)
    embed_alpha = mean_alpha if model.settings.embed_blend == "mean_alpha" else 0.0
    head_alpha = {"base": 0.0, "expert": 1.0, "blend": mean_alpha}[model.settings.head]
    tied = bool(getattr(model.base.config, "tie_word_embeddings", False))
    if tied and head_alpha != embed_alpha:
        warnings.warn(f"the checkpoint ties its LM head to its input embeddings, so the exported head takes the "
                      f"embeddings' mix (alpha {embed_alpha:.3f}) instead of {head_alpha:.3f}", UserWarning, stacklevel=2)
    base_sd, expert_sd = model.base.state_dict(), model.expert.state_dict()
    layer_prefixes = [(base_stack.layer_prefix(i), a) for i, a in enumerate(alphas)]
    merged = {}
    for key, base_value in base_sd.items():
        weight = 0.0
        if key.startswith(tuple(base_stack.embedding_prefixes())):
            weight = embed_alpha
        elif key.startswith(tuple(base_stack.final_prefixes())):
            # a tied head is the embedding matrix; the final norm is never tied and follows `head`
            weight = embed_alpha if tied and key.startswith("lm_head.") else head_alpha
        else:
            weight = next((a for prefix, a in layer_prefixes if key.startswith(prefix)), 0.0)
        if not torch.is_floating_point(base_value) or weight == 0.0:
            merged[key] = base_value.clone()
        else:
            merged[key] = ((1 - weight) * base_value.float() + weight * expert_sd[key].float()).to(base_value.dtype)
    return merged


def export_hard_merge(model: SuperposedModel, out_dir: str | Path, tokenizer=None) -> Path:
    """Save the hard-merged model (and tokenizer) to `out_dir`; autoencoders cannot be folded in and are dropped."""
    out_dir = Path(out_dir)
    merged_model = copy.deepcopy(model.base)
    merged = hard_merge_state_dict(model)
    merged_model.load_state_dict(merged, strict=True)
    merged_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
