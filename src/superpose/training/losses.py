"""The training objective: reconstruction of each labelled token's stack, the LM loss, the spline
regulariser, and for the gates a label cross-entropy and a load-balance term. Gates that compete with the rate
filters (`gate_evidence: fixed_share_mix`) also learn from their own next-token NLL (`gate_own`, weighted like
the LM loss): through the mixture alone, a gate that fell behind the filters would get almost no gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from superpose.model.superposed import SuperposedModel, causal_lm_loss
from superpose.training.blocks import MIXED
from superpose.training.settings import TrainSettings


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor,
                        variant: str) -> torch.Tensor:
    """Masked MSE (1d); 0.9 MSE + 0.1 mean per-token L2 distance (2d). Always float32, on `predicted`'s device."""
    predicted, target = predicted.float(), target.to(predicted.device).float()
    mask = token_mask.to(predicted.device, predicted.dtype).unsqueeze(-1)  # (B, T, 1)
    tokens = mask.sum().clamp(min=1)
    diff = (predicted - target) * mask  # (B, T, d)
    mse = diff.pow(2).sum() / (tokens * predicted.shape[-1])
    if variant == "1d":
        return mse
    return 0.9 * mse + 0.1 * diff.norm(dim=-1).sum() / tokens


def recon_layers(model: SuperposedModel) -> list[int]:
    """Autoencoder layers; with no autoencoders, every layer (so the spline still learns)."""
    return model.ae_layers or list(range(model.config.num_hidden_layers))


def _targets(stack_states: list[list[torch.Tensor]], layer: int, token_domains: torch.Tensor) -> torch.Tensor:
    """(B, T, d): each token's labelled stack's state after `layer` (unlabelled tokens: the base's, masked out)."""
    home = stack_states[0][layer].device
    states = torch.stack([states_m[layer].to(home) for states_m in stack_states])  # (M, B, T, d)
    index = token_domains.clamp(min=0).to(home)[None, ..., None].expand(1, -1, -1, states.shape[-1])
    return states.gather(0, index).squeeze(0)


def gate_label_loss(gates: list[torch.Tensor], token_domains: torch.Tensor) -> torch.Tensor:
    """Mean over layers and labelled tokens of -log w[l, t, label]: the gates learn to pick the labelled stack."""
    labelled = token_domains >= 0  # (B, T)
    tokens = labelled.sum().clamp(min=1)
    total = gates[0].new_zeros(())
    for weights in gates:  # (B, T, M)
        picked = weights.gather(-1, token_domains.clamp(min=0).to(weights.device).unsqueeze(-1)).squeeze(-1)
        total = total + (-torch.log(picked.clamp(min=1e-9)) * labelled.to(weights.device)).sum().to(total.device)
    return total / (tokens * len(gates))


def load_balance_loss(gates: list[torch.Tensor], token_mask: torch.Tensor) -> torch.Tensor:
    """M Σ_m (mean weight of stack m)²: 1 when the unlabelled tokens use every stack alike, M when one takes all."""
    mask = token_mask.float()
    tokens = mask.sum().clamp(min=1)
    total = gates[0].new_zeros(())
    for weights in gates:
        usage = (weights * mask.to(weights.device).unsqueeze(-1)).sum(dim=(0, 1)) / tokens  # (M,)
        total = total + weights.shape[-1] * usage.pow(2).sum().to(total.device)
    return total / len(gates)


def compute_losses(model: SuperposedModel, batch, settings: TrainSettings) -> dict[str, torch.Tensor]:
    ids, mask = batch.input_ids, batch.attention_mask
    token_domains = batch.token_domains.to(ids.device).masked_fill(mask == 0, MIXED)  # (B, T)
    labelled = (token_domains >= 0).long()
    stack_states = model.independent_states(ids, mask)
    model.blend.own_nll.clear()
    if settings.training_graph == "sequential" and model.settings.graph == "sequential":
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_gates=True)
        predicted = {layer: out.hidden_states[layer + 1] for layer in recon_layers(model)}
        logits, gates = out.logits, list(out.gate_weights)
    else:  # the parallel graph (served, or the reference's training graph) reuses the independent states
        predicted, logits, gates = model.forward_parallel(stack_states, mask, ids)
    home = ids.device  # a device map may spread the layers (and so the per-layer terms) over several devices
    recon = sum(
        reconstruction_loss(predicted[layer], _targets(stack_states, layer, token_domains), labelled,
                            model.settings.variant).to(home)
        for layer in recon_layers(model)
    )
    lm = causal_lm_loss(logits, batch.labels).to(home)
    own = model.blend.own_nll  # gates that compete with the rate filters also learn to predict on their own
    gate_own = sum(nll.to(home) for nll in own.values()) / len(own) if own else lm.new_zeros(())
    reg = model.blend.regularisation()
    gate_ce = gate_label_loss(gates, token_domains).to(home)
    balance = load_balance_loss(gates, (token_domains == MIXED) & (mask == 1)).to(home)
    total = (settings.recon_weight * recon + settings.lm_weight * (lm + gate_own) + settings.blend_reg_weight * reg
             + settings.gate_label_weight * gate_ce + settings.load_balance_weight * balance)
    return {"loss": total, "recon": recon, "lm": lm, "gate_own": gate_own, "blend_reg": reg, "gate_ce": gate_ce,
            "balance": balance, "logits": logits}


LOGGED = ("loss", "recon", "lm", "gate_own", "blend_reg", "gate_ce", "balance")
WEIGHTS = {"recon": "recon_weight", "lm": "lm_weight", "gate_own": "lm_weight", "blend_reg": "blend_reg_weight",
           "gate_ce": "gate_label_weight", "balance": "load_balance_weight"}


# ---- distillation: one stack learns the superposed model's next-token distributions ----------------------


def next_scored(labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) positions whose next token is scored (not padding)."""
    return labels[:, 1:] != -100


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_v p_v (log p_v − log q_v) over the last axis; outcomes with p_v = 0 add nothing (no 0·∞)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def distill_kl(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """T² · mean over scored positions of KL(p_T ‖ q_T), both over the full vocabulary (float32).

    `teacher_log_probs` (B, T, V) are already tempered (`teacher_cache.tempered_log_probs`); position t of
    both predicts token t + 1.
    """
    scored = next_scored(labels)  # (B, T-1)
    log_q = torch.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    log_p = teacher_log_probs[:, :-1].float().to(log_q.device)
    kl = _kl_terms(log_p, log_q)  # (B, T-1)
    mask = scored.to(kl.device)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def topk_kl(student_logits: torch.Tensor, indices: torch.Tensor, kept: torch.Tensor, rest: torch.Tensor,
            labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · mean KL over k + 1 outcomes (the teacher's k kept tokens and "any other"), from a top-k cache.

    `indices`, `kept` (B, T, k) and `rest` (B, T) are the teacher's tempered entries; the student's
    "other" mass is the logsumexp of its log-probabilities outside the kept tokens (exact, no 1 − Σ).
    """
    scored = next_scored(labels)
    log_q = torch.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    idx = indices[:, :-1].to(log_q.device)
    q_kept = log_q.gather(-1, idx)  # (B, T-1, k)
    q_rest = log_q.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)  # (B, T-1, 1)
    log_p = torch.cat([kept[:, :-1], rest[:, :-1, None]], -1).float().to(log_q.device)  # (B, T-1, k+1)
    kl = _kl_terms(log_p, torch.cat([q_kept, q_rest], -1))
    mask = scored.to(kl.device)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def lm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over scored positions (the replay loss)."""
    return F.cross_entropy(student_logits[:, :-1].reshape(-1, student_logits.shape[-1]).float(),
                           labels[:, 1:].reshape(-1).to(student_logits.device), ignore_index=-100)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_weight: float, temperature: float,
                 teacher_log_probs: torch.Tensor | None = None,
                 cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{"loss": λ·KL + (1 − λ)·LM, "kl", "lm"}: the teacher given live (`teacher_log_probs`) or from the cache."""
    lm = lm_loss(student_logits, labels)
    if teacher_weight == 0:
        kl = lm.new_zeros(())
    elif cached is not None:
        kl = topk_kl(student_logits, *cached, labels, temperature)
    else:
        kl = distill_kl(student_logits, teacher_log_probs, labels, temperature)
    return {"loss": teacher_weight * kl + (1 - teacher_weight) * lm, "kl": kl, "lm": lm}
