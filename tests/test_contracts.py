"""The declared contracts between modules, losses, data modules and callbacks (lightning_kd.contracts)."""

from __future__ import annotations

import pytest
import torch

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.contracts import MonitoredTemperature, TeacherInValidation, ValidationOutput, ViewsData
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import CTKD, DKD, KD, MLKD
from tests.helpers.tiny import TinyNet


@pytest.mark.parametrize(("two_views", "views"), [(False, 1), (True, 2)])
def test_data_modules_declare_their_views(two_views, views):
    data = DigitsDataModule(two_views=two_views)
    assert isinstance(data, ViewsData)
    assert data.num_views == views


def test_losses_declare_the_temperature_monitors_read():
    for loss, expected in ((KD(temperature=3.0), 3.0), (DKD(temperature=5.0), 5.0), (MLKD(temperature=2.0), 2.0)):
        assert isinstance(loss, MonitoredTemperature)
        assert loss.monitored_temperature() == expected
    ctkd = CTKD(t_start=2.0, t_end=20.0)
    torch.testing.assert_close(ctkd.monitored_temperature(), ctkd.current_temperature())


def test_distillation_modules_declare_teacher_in_validation_and_both_modules_one_output_spelling():
    module = DistillationModule(TinyNet(), TinyNet(), KD())
    assert isinstance(module, TeacherInValidation)
    assert not isinstance(ClassificationModule(TinyNet()), TeacherInValidation)
    batch = (torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    for m in (module, ClassificationModule(TinyNet())):
        m.log = lambda *args, **kwargs: None  # no trainer: logging is not under test
        m._teacher_acc_logged = True
        out = m.validation_step(batch, 0)
        assert set(out) == set(ValidationOutput.__annotations__)
        assert out["student_logits"].shape == (4, 4)
        assert out["teacher_logits"] is None


def test_load_state_dict_returns_what_torch_returns_with_the_optional_keys_dropped():
    module = DistillationModule(TinyNet(), TinyNet(), KD())
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")}
    result = module.load_state_dict(state)
    reference = torch.nn.Linear(1, 1).load_state_dict(torch.nn.Linear(1, 1).state_dict())
    assert type(result) is type(reference)  # fails if torch changes the type load_state_dict returns
    assert result.missing_keys == []
    assert result.unexpected_keys == []
