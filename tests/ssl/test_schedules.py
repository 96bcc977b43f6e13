import math

import pytest

from dinov3_hf.ssl.schedules import Schedule, half_cosine_ramp, make_schedule, warmup_constant, warmup_cosine


def test_warmup_constant():
    kw = dict(warmup_iters=10, start=0.04, peak=0.07)
    assert warmup_constant(0, **kw) == pytest.approx(0.04)
    assert warmup_constant(5, **kw) == pytest.approx(0.055)
    assert warmup_constant(9, **kw) == pytest.approx(0.04 + 0.03 * 0.9)  # endpoint excluded
    assert warmup_constant(10, **kw) == pytest.approx(0.07)
    assert warmup_constant(10_000, **kw) == pytest.approx(0.07)
    assert warmup_constant(0, warmup_iters=0, start=0.0, peak=0.04) == 0.04


def test_warmup_cosine():
    kw = dict(warmup_iters=10, total_iters=110, start=0.0, peak=1.0, end=0.1)
    assert warmup_cosine(0, **kw) == 0.0
    assert warmup_cosine(5, **kw) == pytest.approx(0.5)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.55)  # half-way down: (peak + end) / 2
    assert warmup_cosine(35, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(109, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.99)))
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)
    assert warmup_cosine(500, **kw) == pytest.approx(0.1)
    # momentum-style: no warmup, cosine base -> 1
    assert warmup_cosine(0, warmup_iters=0, total_iters=4, start=0.992, peak=0.992, end=1.0) == pytest.approx(0.992)
    assert warmup_cosine(2, warmup_iters=0, total_iters=4, start=0.992, peak=0.992, end=1.0) == pytest.approx(0.996)


def test_half_cosine_ramp():
    kw = dict(start_iter=100, ramp_iters=10, start=0.0, end=2.0)
    assert half_cosine_ramp(0, **kw) == 0.0
    assert half_cosine_ramp(99, **kw) == 0.0
    assert half_cosine_ramp(100, **kw) == pytest.approx(0.0)
    assert half_cosine_ramp(105, **kw) == pytest.approx(1.0)
    assert half_cosine_ramp(110, **kw) == 2.0
    assert half_cosine_ramp(5, start_iter=0, ramp_iters=0, start=1.0, end=0.5) == 0.5


def test_make_schedule():
    cfg = {"kind": "warmup_cosine", "warmup_iters": 10, "total_iters": 110, "start": 0, "peak": 1, "end": 0.1}
    s = make_schedule(cfg)
    assert isinstance(s, Schedule)
    assert s(60) == pytest.approx(0.55)
    assert isinstance(s(0), float)
    assert make_schedule({"kind": "half_cosine_ramp", "start_iter": 0, "ramp_iters": 2, "start": 1, "end": 0})(1) == (
        pytest.approx(0.5)
    )
    constant = make_schedule({"kind": "constant", "value": 1.5})
    assert [constant(it) for it in (0, 7, 10**6)] == [1.5, 1.5, 1.5]


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"kind": "linear"}, "Unknown schedule kind 'linear'"),
        ({"warmup_iters": 1}, "'kind' key"),
        ({"kind": "warmup_constant", "warmup_iters": 1, "start": 0}, "missing: peak"),
        ({"kind": "warmup_constant", "warmup_iters": 1, "start": 0, "peak": 1, "end": 2}, "unknown: end"),
        ({"kind": "warmup_cosine", "warmup_iters": 9, "total_iters": 5, "start": 0, "peak": 1, "end": 0}, "total_it"),
        ({"kind": "warmup_constant", "warmup_iters": -1, "start": 0, "peak": 1}, "warmup_iters must be >= 0"),
    ],
)
def test_make_schedule_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(cfg)
