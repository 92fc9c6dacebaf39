"""`superpose gates`: which stack each token of a text is routed to, layer by layer.

A token gate's weights are the model's routing decision, so showing them per token is the quickest way
to see whether it follows a language switch. The same numbers feed the analysis heat map.
"""
from __future__ import annotations

from pathlib import Path

import torch

from superpose.core.settings import SettingsError
from superpose.core.text_tables import format_table

__all__ = ["token_gates", "gates_table", "visible_token", "show_gates"]

STATIC_NOTE = "note: this run's gate is static (one blend per layer), so the weights are the same at every token."


def visible_token(token: str) -> str:
    """A token as printable text: control characters escaped as in repr, spaces shown as '␣'."""
    return repr(token)[1:-1].replace("\\'", "'").replace(" ", "␣")


def _device_of(model) -> torch.device:
    """Where the input ids must go: the device of the base's embedding (a device map may spread the stacks)."""
    return model.get_input_embeddings().weight.device


def _check_text(text: str) -> None:
    """Fail before any model is loaded: an empty text has no gates to show."""
    if not text or not text.strip():
        raise SettingsError("--text must not be empty: give the text whose gates to show")


def _check_length(model, n_tokens: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and n_tokens > limit:
        raise SettingsError(f"--text is {n_tokens} tokens; this model takes at most {limit}")


@torch.no_grad()
def token_gates(model, tokenizer, text: str) -> tuple[list[str], torch.Tensor]:
    """(decoded tokens of `text`, (L, T, M) float32 CPU weights of each stack at each layer and token).

    No special tokens are added: training and analysis tokenise text the same way (`data.tokenize_blocks`).
    """
    _check_text(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SettingsError(f"--text {text!r} tokenises to no token")
    _check_length(model, len(ids))
    input_ids = torch.tensor([ids], device=_device_of(model))  # (1, T)
    out = model(input_ids, attention_mask=torch.ones_like(input_ids), output_gates=True, logits_to_keep=1)
    weights = torch.stack([g[0].float().cpu() for g in out.gate_weights])  # (L, T, M)
    return [tokenizer.decode([i]) for i in ids], weights


def gates_table(tokens: list[str], weights: torch.Tensor, stack_names: list[str], static: bool = False) -> str:
    """One row per token: per stack, the weight averaged over layers and the weight at the last layer."""
    n_layers, n_tokens, n_stacks = weights.shape
    if n_tokens != len(tokens) or n_stacks != len(stack_names):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(tokens)} tokens and stacks {stack_names}")
    mean, last = weights.mean(0), weights[-1]  # (T, M) each
    headers = ["#", "token"] + [f"{name} {kind}" for name in stack_names for kind in ("mean", "last")]
    rows = [[t, visible_token(token)] + [f"{float(w[t, m]):.3f}" for m in range(n_stacks) for w in (mean, last)]
            for t, token in enumerate(tokens)]
    title = (f"Gate weights of stacks {', '.join(stack_names)}: 'mean' over all {n_layers} layers, "
             f"'last' at layer {n_layers - 1}")
    table = format_table(headers, rows, title=title)
    return table + (f"\n{STATIC_NOTE}" if static else "")


def show_gates(run_dir: str | Path, text: str, device: str | None = None, dtype: str = "float32") -> str:
    """Load a run and return its gates table for `text` (checks the text before loading any weights)."""
    from superpose.core.loading import load_tokenizer
    from superpose.model.superposed import SuperposedModel

    _check_text(text)
    tokenizer = load_tokenizer(str(run_dir))
    model = SuperposedModel.from_pretrained(run_dir, dtype=dtype, device=device)
    tokens, weights = token_gates(model, tokenizer, text)
    return gates_table(tokens, weights, model.stack_names, static=model.settings.gate == "static")
