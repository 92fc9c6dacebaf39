"""What a run holds: settings, trainable vs frozen parameters, each stack's weight per layer."""
from __future__ import annotations

import json
from pathlib import Path

from superpose.core.text_tables import format_table


def parameter_counts(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    per_ae = {name: sum(p.numel() for p in ae.parameters()) for name, ae in model.autoencoders.items()}
    gate = model.blend.gate
    return {"trainable": trainable, "frozen": frozen, "spline": sum(p.numel() for p in model.blend.spline.parameters()),
            "gates": sum(p.numel() for p in gate.parameters()) if gate is not None else 0,
            "per_autoencoder": next(iter(per_ae.values()), 0), "autoencoders": sum(per_ae.values())}


def describe(run_dir: str | Path) -> str:
    from superpose.compare.hard_merge import layer_weights
    from superpose.model.superposed import SuperposedModel

    model = SuperposedModel.from_pretrained(run_dir).eval()
    counts = parameter_counts(model)
    lines = [f"run: {run_dir}", f"base: {model.config.base_model}"]
    lines += [f"expert: {name} = {model.config.experts[name]}" for name in model.config.expert_names]
    lines += ["settings: " + json.dumps(model.config.settings, sort_keys=True),
              f"autoencoder layers: {model.ae_layers}", ""]
    lines.append(format_table(["parameters", "count"], [[k, v] for k, v in counts.items()]))
    per_layer = layer_weights(model)
    rows = [[layer, *[round(w, 3) for w in weights], "AE" if layer in model.ae_layers else ""]
            for layer, weights in enumerate(per_layer)]
    kind = "static weights" if model.blend.gate is None else "prior of the per-token gates"
    lines += ["", format_table(["layer", *model.stack_names, ""], rows,
                               title=f"each stack's {kind} per layer (2d: mean over the hidden size)")]
    return "\n".join(lines)
