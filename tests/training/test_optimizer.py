"""The optimiser trains alpha and the autoencoders at their own rates and clips each group on its own.

alpha's gradients are about a thousand times smaller than the autoencoders'. One global clip would
therefore shrink alpha's step along with the autoencoders' and all but freeze it; per-group
clipping (as the paper does, `grad_clip` in `TrainSettings`) leaves alpha's gradient alone.
"""
import pytest
import torch
from helpers import char_tokenizer, paper_model, paper_train, tiny_pair, write_domains

from superpose.model.superposed import SuperposedModel
from superpose.training import step as training_step
from superpose.training.loop import train
from superpose.training.step import make_optimizer, optimizer_step

LR_ALPHA, LR_AE = 3e-2, 2e-3


def _model(variant: str = "1d") -> SuperposedModel:
    torch.manual_seed(0)
    return SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(variant=variant, ae_layers=[1]))


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _norm(params) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()


@pytest.mark.parametrize("variant", ["1d", "2d"])
def test_alpha_group_gets_lr_alpha_and_autoencoder_group_lr_ae(variant):
    model = _model(variant)
    settings = paper_train(lr_blend=LR_ALPHA, lr_ae=LR_AE, weight_decay=0.0)
    optimizer = make_optimizer(model, settings)
    alpha, autoencoders = list(model.blend.spline.parameters()), list(model.autoencoders.parameters())
    by_lr = {group["lr"]: _ids(group["params"]) for group in optimizer.param_groups}
    assert by_lr == {LR_ALPHA: _ids(alpha), LR_AE: _ids(autoencoders)}
    trainable = _ids(p for p in model.parameters() if p.requires_grad)
    assert trainable == _ids(alpha) | _ids(autoencoders), "the optimiser must see every trainable parameter"

    # A real step: AdamW's first update is lr * g / (|g| + eps), i.e. exactly lr for a gradient of ones.
    before = {id(p): p.detach().clone() for p in alpha + autoencoders}
    for p in alpha + autoencoders:
        p.grad = torch.ones_like(p)
    optimizer.step()
    for params, lr in ((alpha, LR_ALPHA), (autoencoders, LR_AE)):
        for p in params:
            torch.testing.assert_close(before[id(p)] - p.detach(), torch.full_like(p, lr), atol=lr * 1e-4, rtol=0)


def test_optimizer_step_clips_each_group_on_its_own():
    model = _model()
    optimizer = make_optimizer(model, paper_train(lr_blend=LR_ALPHA, lr_ae=LR_AE))
    alpha, autoencoders = list(model.blend.spline.parameters()), list(model.autoencoders.parameters())
    torch.manual_seed(1)
    for p in alpha:
        p.grad = torch.randn_like(p) * 1e-3  # small: well under the clip
    for p in autoencoders:
        p.grad = torch.randn_like(p) * 1e3  # huge
    small = [p.grad.clone() for p in alpha]
    assert _norm(alpha) < 0.5 and _norm(autoencoders) > 1e3
    optimizer_step(optimizer, 0.5)
    for p, g in zip(alpha, small, strict=True):
        assert torch.equal(p.grad, g), "alpha's gradient was scaled by the autoencoders' norm (global clipping)"
    assert _norm(autoencoders) == pytest.approx(0.5, rel=1e-4)


def test_training_loop_clips_per_group(tmp_path, monkeypatch):
    """One real train() run: every step's gradients are clipped group by group, with grad_clip from the settings."""
    en, fr = write_domains(tmp_path, repeat=2)
    steps = []
    real_step = training_step.optimizer_step

    def recording_step(optimizer, grad_clip):
        groups = [group["params"] for group in optimizer.param_groups]
        before = [_norm(params) for params in groups]
        real_step(optimizer, grad_clip)
        steps.append((grad_clip, before, [_norm(params) for params in groups]))

    monkeypatch.setattr(training_step, "optimizer_step", recording_step)
    # A large reconstruction weight makes the AE gradients (~30) exceed the clip while alpha's (~0.01) stay under it.
    settings = paper_train(max_steps=2, batch_size=4, block_size=16, recon_weight=1000.0, grad_clip=1.0,
                             max_valid_blocks=None)
    train(_model(), char_tokenizer(), {"base": str(en), "expert": str(fr)}, None, tmp_path / "run",
          settings, progress=False)
    assert len(steps) == 2
    for clip, before, after in steps:
        assert clip == 1.0
        assert min(before) < clip < max(before), f"this case must tell per-group from global clipping: {before}"
        for norm_before, norm_after in zip(before, after, strict=True):
            assert norm_after == pytest.approx(min(norm_before, clip), rel=1e-4)
