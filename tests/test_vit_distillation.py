"""Distilling a CNN into a vision transformer: TokenKD on the distillation token, and the teacher's own input size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.losses import AT, KD, TokenKD
from lightning_kd.models import create_model
from lightning_kd.models.vit import deit_tiny, deit_tiny_distilled

pytestmark = pytest.mark.filterwarnings("ignore:The teacher .* is built with random weights")


def _golden_token_kd(cls, dist, teacher, targets, temperature, kd_weight, ce_weight, standardize):
    """The formula in float64, written from the definitions (not the library's helpers)."""
    cls, dist, teacher = (x.double() for x in (cls, dist, teacher))
    ce = -cls.log_softmax(-1).gather(1, targets[:, None]).mean()

    def z(x):
        mean = x.mean(-1, keepdim=True)
        std = ((x - mean) ** 2).sum(-1, keepdim=True).div(x.shape[-1] - 1).sqrt()
        return (x - mean) / (std + 1e-7)

    s, t = (z(dist), z(teacher)) if standardize else (dist, teacher)
    p = (t / temperature).softmax(-1)
    kl = (p * (p.log() - (s / temperature).log_softmax(-1))).sum(-1).mean()
    return ce_weight * ce, kd_weight * temperature**2 * kl


@pytest.mark.parametrize("standardize", [True, False])
def test_token_kd_matches_the_formula(standardize):
    g = torch.Generator().manual_seed(0)
    cls, dist, teacher = (torch.randn(6, 10, generator=g) * 3 for _ in range(3))
    targets = torch.randint(0, 10, (6,), generator=g)
    loss = TokenKD(temperature=3.0, kd_weight=9.0, ce_weight=0.5, standardize=standardize)
    terms = loss((cls, dist), teacher, targets)
    ce, kd = _golden_token_kd(cls, dist, teacher, targets, 3.0, 9.0, 0.5, standardize)
    assert math.isclose(float(terms["ce"]), float(ce), rel_tol=1e-5)
    assert math.isclose(float(terms["kd"]), float(kd), rel_tol=1e-5)


def test_token_kd_gradients_reach_each_head_through_its_own_term():
    cls = torch.randn(4, 10, requires_grad=True)
    dist = torch.randn(4, 10, requires_grad=True)
    terms = TokenKD(ce_weight=0.0)((cls, dist), torch.randn(4, 10), torch.randint(0, 10, (4,)))
    sum(terms.values()).backward()
    assert torch.count_nonzero(cls.grad) == 0  # the reference's weight 0 on the class head's cross-entropy
    assert torch.count_nonzero(dist.grad) > 0


def test_token_kd_refuses_one_head_and_a_student_without_a_distillation_token():
    with pytest.raises(ValueError, match=r"takes the student's two heads"):
        TokenKD()(torch.randn(2, 10), torch.randn(2, 10), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"the student 'deit_tiny' has none: use a student built with a distillation"):
        DistillationModule("deit_tiny", "resnet8", TokenKD(), num_classes=10)
    with pytest.raises(ValueError, match=r"the student 'DeiT' has none"):
        DistillationModule(deit_tiny(10, img_size=32), "resnet8", TokenKD(), num_classes=10)
    with pytest.raises(ValueError, match=r"combined with a one-head logit loss"):
        DistillationModule(
            deit_tiny_distilled(10, img_size=32), "resnet8", TokenKD(), num_classes=10, feature_loss=AT()
        )


def test_teacher_input_size_resizes_each_batch_for_the_teacher_only():
    teacher = create_model("resnet8", 10).eval()
    seen = []
    teacher.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    module = DistillationModule("resnet8", teacher, KD(), num_classes=10, teacher_input_size=16)
    x = torch.randn(3, 3, 32, 32)
    out = module.teacher_component.outputs(x)
    assert seen == [(3, 3, 16, 16)]
    with torch.no_grad():
        expected = teacher(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    assert torch.equal(out.logits, expected)
    assert module.hparams["teacher_input_size"] == 16
    with pytest.raises(ValueError, match=r"teacher_input_size must be a positive integer \(pixels\) or None, got 0"):
        DistillationModule("resnet8", "resnet8", KD(), num_classes=10, teacher_input_size=0)


def test_a_distilled_deit_learns_from_a_cnn_teacher_at_its_own_input_size(tmp_path):
    seed_everything(0)
    student = deit_tiny_distilled(10, img_size=64, drop_path_rate=0.0)
    teacher = create_model("resnet8", 10)
    shapes = []
    teacher.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[-2:])))
    module = DistillationModule(
        student,
        teacher,
        TokenKD(temperature=3.0, kd_weight=9.0, ce_weight=0.0),
        teacher_input_size=32,
        optimizer=lambda params: torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05),
        lr_scheduler=None,
    )
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(8, 3, 64, 64, generator=g), torch.randint(0, 10, (8,), generator=g)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    before = student.head_dist.weight.detach().clone()
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader, loader)
    assert set(shapes) == {(32, 32)}  # training and validation: the teacher always sees 32 px
    assert not torch.equal(before, student.head_dist.weight)  # the distillation head learned
    assert float(trainer.callback_metrics["train/ce_epoch"]) == 0.0
    assert float(trainer.callback_metrics["train/kd_epoch"]) > 0
    module.eval()
    x = data.tensors[0][:2]
    with torch.no_grad():
        cls, dist = student.forward_heads(x)
        torch.testing.assert_close(module(x), (cls + dist) / 2)  # evaluation: the mean of the two heads


def test_locality_guidance_from_a_folded_pycls_resnet56_into_deit_blocks():
    """The reference's locality guidance: DeiT blocks 0, 6, 11 matched to the teacher's three stages."""
    from lightning_kd.losses import LocalityGuidance
    from lightning_kd.models.vit import resnet56_pycls

    seed_everything(0)
    teacher = resnet56_pycls(10).eval()
    guidance = LocalityGuidance(
        student_channels=192, teacher_channels=(16, 32, 64), student_layers=(0, 6, 11), teacher_layers=(0, 1, 2)
    )
    module = DistillationModule(
        deit_tiny(10, img_size=64, drop_path_rate=0.0),
        teacher,
        KD(ce_weight=1.0, kd_weight=0.0),
        feature_loss=guidance,
        teacher_input_size=32,
        fold_teacher_bn=True,
    )
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    module.train()
    logits, terms = module.training_terms(x, y)
    assert logits.shape == (2, 10)
    assert set(terms) == {"ce", "kd", "guidance"}
    sum(terms.values()).backward()
    assert all(r.weight.grad is not None for r in guidance.regressors)
    features = module.teacher_component.outputs(x).features
    assert [tuple(f.shape) for f in features] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]


def test_a_pycls_checkpoint_loads_as_the_guidance_teacher(tmp_path):
    """The reference code saves {"epoch", "model_state", "optimizer_state", ...}; our names are pycls's."""
    from lightning_kd.models.vit import resnet56_pycls

    torch.manual_seed(4)
    trained = resnet56_pycls(100)
    path = tmp_path / "model.pyth"
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {"epoch": 299, "model_state": trained.state_dict(), "optimizer_state": optimizer.state_dict(), "cfg": "..."},
        path,
    )
    loaded = create_model("resnet56_pycls", 100, weights=str(path))
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
