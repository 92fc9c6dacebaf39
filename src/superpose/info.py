"""What a run holds: settings, trainable vs frozen parameters, alpha per layer."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .tables import format_table


def parameter_counts(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    per_ae = {name: sum(p.numel() for p in ae.parameters()) for name, ae in model.autoencoders.items()}
    return {"trainable": trainable, "frozen": frozen, "alpha": sum(p.numel() for p in model.alpha.parameters()),
            "per_autoencoder": next(iter(per_ae.values()), 0), "autoencoders": sum(per_ae.values())}


def describe(run_dir: str | Path) -> str:
    from .modeling import SuperposedModel

    model = SuperposedModel.from_pretrained(run_dir).eval()
    counts = parameter_counts(model)
    with torch.no_grad():
        alpha = model.alphas().float()
    lines = [f"run: {run_dir}", f"base: {model.config.base_model}",
             f"expert: {model.config.expert_name} = {model.config.experts[model.config.expert_name]}",
             "settings: " + json.dumps(model.config.settings, sort_keys=True),
             f"autoencoder layers: {model.ae_layers}", ""]
    lines.append(format_table(["parameters", "count"], [[k, v] for k, v in counts.items()]))
    rows = []
    for layer, a in enumerate(alpha):
        if a.dim() == 0:
            rows.append([layer, float(a), "AE" if layer in model.ae_layers else ""])
        else:
            rows.append([layer, f"mean {a.mean():.3f} min {a.min():.2f} max {a.max():.2f}", "AE" if layer in model.ae_layers else ""])
    lines += ["", format_table(["layer", "alpha (0 = base, 1 = expert)", ""], rows)]
    return "\n".join(lines)
