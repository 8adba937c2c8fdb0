"""The learning-rate schedule's shape, BatchNorm's scaled learning rate, and the weight average."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.schedule import WeightAverage, lr_factor, make_scheduler, param_groups


def test_linear_schedule_is_a_triangle():
    factors = [lr_factor(step, 100, "linear", warmup=0.2, lr_end=0.1) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 20) and factors[19] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 19
    assert all(a > b for a, b in zip(factors[20:], factors[21:]))  # falls every step after the peak
    assert factors[-1] == pytest.approx(0.1 + 0.9 / 80)  # one step short of lr_end


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_without_warmup_the_schedule_starts_at_lr_and_ends_near_lr_end(schedule):
    assert lr_factor(0, 50, schedule) == 1.0
    assert lr_factor(49, 50, schedule, lr_end=0.0) < 0.03
    assert lr_factor(25, 50, "cosine") == pytest.approx(0.5)


def test_scheduler_scales_each_groups_own_rate():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    groups = param_groups(model, lr=0.1, weight_decay=0.01, norm_lr_scale=64)
    assert [len(g["params"]) for g in groups] == [2, 2]  # conv weight+bias; norm weight+bias
    optimizer = torch.optim.SGD(groups, lr=0.1, weight_decay=0.01)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(6.4)
    assert optimizer.param_groups[1]["weight_decay"] * 6.4 == pytest.approx(0.01 * 0.1)  # same decay per step
    scheduler = make_scheduler(optimizer, 10, "linear", warmup=0.5, lr_end=0.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 1.28])
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 6.4])  # the peak, step 5 of 10
    assert len(param_groups(model, 0.1, 0.0, 1.0)) == 1


def test_frozen_parameters_are_left_out():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].weight.requires_grad_(False)
    trained = [p for g in param_groups(model, 0.1, 0.0, 64) for p in g["params"]]
    assert len(trained) == 3 and all(p is not model[1].weight for p in trained)


def test_weight_average_follows_the_weights_with_a_warm_up():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # first decay: 1/10, so the average is already 0.9 of the way
    assert average.model.weight.item() == pytest.approx(0.9)
    for _ in range(200):
        average.update(model)
    assert average.model.weight.item() == pytest.approx(1.0, abs=1e-6)
    assert not average.model.weight.requires_grad and model.weight.requires_grad

    restored = WeightAverage(model, decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 201 and restored.model.weight.item() == average.model.weight.item()


def test_learning_rate_tensors_follow_the_schedule_step_by_step():
    """The rate a graphed step reads (cnnlab.engines.LearningRates) is, before every step, the schedule's rate for
    that step, for each parameter group (BatchNorm's own at 4×); the optimiser gets its floats back afterwards."""
    from cnnlab.engines import LearningRates

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(param_groups(model, 0.1, 5e-4, 4.0), lr=0.1, momentum=0.9)
    scheduler = make_scheduler(optimizer, 40, "linear", 0.23, 0.07)
    rates = LearningRates(optimizer, torch.device("cpu"))
    for step in range(40):
        rates.fill()
        with rates.swapped_in():
            assert all(group["lr"] is rate for group, rate in zip(optimizer.param_groups, rates.tensors))
        expected = [base * lr_factor(step, 40, "linear", 0.23, 0.07) for base in (0.1, 0.4)]
        assert [rate.item() for rate in rates.tensors] == expected  # float64: every digit
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(expected, rel=1e-15, abs=0)
        optimizer.step()
        scheduler.step()


def test_weight_average_on_the_device_gives_the_host_formula_to_the_last_digit():
    """The decay counted in a device tensor (so a graph can replay it) is the decay this average computed with
    Python floats: min(decay, (1 + t) / (10 + t)), one float lerp an update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7))
    average = WeightAverage(model, decay=0.95)
    by_hand = [value.clone() for value in model.state_dict().values()]
    for t in range(60):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
            model(torch.randn(8, 5))  # moves BatchNorm's statistics and its counter
        average.update(model)
        decay = min(0.95, (1 + t) / (10 + t))
        for kept, current in zip(by_hand, model.state_dict().values()):
            kept.lerp_(current, 1 - decay) if kept.is_floating_point() else kept.copy_(current)
    assert average.updates.device == next(model.parameters()).device and average.updates.item() == 60
    for kept, averaged in zip(by_hand, average.model.state_dict().values()):
        assert torch.equal(kept, averaged)
