import pytest
import torch
from torch import nn

from dinov3_hf.ssl.teachers import ema_update, make_teacher


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.norm = nn.BatchNorm1d(1)  # has buffers (running stats)


def _fill(module: Tiny, weight: float, bias: float, running_mean: float) -> Tiny:
    with torch.no_grad():
        module.linear.weight.fill_(weight)
        module.linear.bias.fill_(bias)
        module.norm.weight.fill_(weight)
        module.norm.running_mean.fill_(running_mean)
    return module


def test_make_teacher():
    student = Tiny().train()
    teacher = make_teacher(student)
    assert not teacher.training and student.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert teacher.linear.weight.data_ptr() != student.linear.weight.data_ptr()
    torch.testing.assert_close(teacher.linear.weight, student.linear.weight)


def test_ema_update_hand_values_and_buffers_untouched():
    student = _fill(Tiny(), weight=1.0, bias=-2.0, running_mean=5.0)
    teacher = make_teacher(_fill(Tiny(), weight=3.0, bias=4.0, running_mean=7.0))
    ema_update(teacher, student, momentum=0.9)
    # 0.9·3 + 0.1·1 = 2.8 ; 0.9·4 + 0.1·(-2) = 3.4
    torch.testing.assert_close(teacher.linear.weight, torch.full((1, 2), 2.8))
    torch.testing.assert_close(teacher.linear.bias, torch.full((1,), 3.4))
    torch.testing.assert_close(teacher.norm.weight, torch.full((1,), 2.8))
    assert teacher.norm.running_mean.item() == 7.0  # buffers are not EMA'd
    assert student.linear.weight.grad is None and student.linear.weight.eq(1.0).all()  # student unchanged
    ema_update(teacher, student, momentum=0.0)  # m = 0 copies the student
    torch.testing.assert_close(teacher.linear.bias, torch.full((1,), -2.0))


def test_ema_update_errors():
    with pytest.raises(ValueError, match="names differ"):
        ema_update(make_teacher(Tiny()), nn.Linear(2, 1), momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(make_teacher(Tiny()), Tiny(), momentum=1.5)
