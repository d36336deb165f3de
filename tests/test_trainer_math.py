"""Trainer math checked against independent computations: numpy loops, closed forms, diffusers."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from evalsvc.errors import InputError
from trainer.ema import EMA
from trainer.noise import min_snr_weights, offset_noise, snr
from trainer.schedules import LR_KINDS, lr_factor, make_lr_scheduler, make_optimizer

# --------------------------------------------------------------------------- EMA


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]


@pytest.mark.parametrize("update_every", [1, 3])
def test_ema_matches_numpy_loop(update_every):
    decay = 0.9
    params = _params()
    ema = EMA(params, decay=decay, update_every=update_every)
    rng = np.random.default_rng(1)
    expected = [p.detach().numpy().astype(np.float64) for p in params]
    n_updates = 0
    for global_step in range(1, 13):
        values = [rng.standard_normal(p.shape) for p in params]
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(torch.from_numpy(v))
        updated = ema.step(global_step)
        assert updated == (global_step % update_every == 0)
        if global_step % update_every == 0:
            n_updates += 1
            # values as the float32 parameters hold them
            expected = [decay * e + (1 - decay) * v.astype(np.float32) for e, v in zip(expected, values)]
    assert ema.num_updates == n_updates == 12 // update_every
    for i, e in enumerate(expected):
        np.testing.assert_allclose(ema.shadow[str(i)].numpy(), e, rtol=1e-5, atol=1e-6)


def test_ema_shadow_is_float32_on_param_device_and_names_from_dict():
    p = torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float16))
    ema = EMA({"w": p}, decay=0.5)
    assert ema.shadow["w"].dtype == torch.float32 and ema.shadow["w"].device == p.device
    with torch.no_grad():
        p.fill_(3.0)
    ema.step(0)
    assert torch.equal(ema.shadow["w"], torch.full((2, 2), 2.0))


def test_ema_swapped_in_restores_raw_bit_exactly():
    params = _params()
    ema = EMA(params, decay=0.99)
    g = torch.Generator().manual_seed(2)
    for step in range(5):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=g) * 1e-3)
        ema.step(step)
    raw = [p.detach().clone() for p in params]
    with ema.swapped_in():
        for i, p in enumerate(params):
            assert torch.equal(p, ema.shadow[str(i)])
            assert not torch.equal(p, raw[i])
    for p, r in zip(params, raw):
        assert torch.equal(p, r)
    with pytest.raises(RuntimeError, match="boom"):
        with ema.swapped_in(params):
            raise RuntimeError("boom")
    for p, r in zip(params, raw):
        assert torch.equal(p, r)


def test_ema_copy_to_and_state_dict_round_trip():
    params = _params()
    ema = EMA(params, decay=0.8, update_every=2)
    with torch.no_grad():
        params[0].mul_(2)
    ema.step(2)
    other = EMA(_params(seed=5), decay=0.8, update_every=2)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    targets = _params(seed=7)
    other.copy_to(targets)
    for i, t in enumerate(targets):
        assert torch.equal(t, ema.shadow[str(i)])
    with pytest.raises(ValueError, match="decay"):
        EMA(_params(), decay=0.5, update_every=2).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("kwargs", [{"decay": 0.0}, {"decay": 1.0}, {"decay": 0.9, "update_every": 0}])
def test_ema_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        EMA(_params(), **kwargs)


# --------------------------------------------------------------------------- noise


def test_offset_noise_equals_direct_computation():
    shape = (2, 4, 8, 8)
    got = offset_noise(shape, 0.1, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    base = torch.randn(shape, generator=g)
    expected = base + 0.1 * torch.randn(2, 4, 1, 1, generator=g)
    assert torch.equal(got, expected)
    assert torch.equal(offset_noise(shape, 0.0, torch.Generator().manual_seed(3)), base)


def test_offset_noise_statistics():
    b, c, h, w, offset = 4096, 4, 16, 16, 0.1
    noise = offset_noise((b, c, h, w), offset, torch.Generator().manual_seed(4)).double()
    channel_means = noise.mean(dim=(2, 3))
    # per-channel spatial mean = offset term (variance offset^2) + mean of h*w N(0,1) (variance 1/(h*w))
    expected_var = offset**2 + 1.0 / (h * w)
    assert abs(channel_means.var().item() - expected_var) < 0.05 * expected_var
    assert abs(channel_means.mean().item()) < 4 * (expected_var / (b * c)) ** 0.5
    assert abs(noise.var().item() - (1 + offset**2)) < 0.01


@pytest.fixture(scope="module")
def alphas_cumprod():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return sched.alphas_cumprod


def test_snr_closed_form(alphas_cumprod):
    t = torch.tensor([0, 1, 10, 250, 500, 999])
    a = alphas_cumprod.numpy().astype(np.float64)[t.numpy()]
    np.testing.assert_allclose(snr(alphas_cumprod, t).numpy(), a / (1 - a), rtol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_closed_form(alphas_cumprod, gamma, prediction_type):
    t = torch.arange(0, 1000, 7)
    a = alphas_cumprod.numpy().astype(np.float64)[t.numpy()]
    s = a / (1 - a)
    denominator = s if prediction_type == "epsilon" else s + 1
    expected = np.minimum(s, gamma) / denominator
    got = min_snr_weights(alphas_cumprod, t, gamma, prediction_type).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (expected < 1).any() and (expected > 0).all()  # gamma is active somewhere


def test_min_snr_weights_refuses_unknown_prediction_type(alphas_cumprod):
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(alphas_cumprod, torch.tensor([1]), 5.0, "sample")


# --------------------------------------------------------------------------- schedules

_DIFFUSERS_NAME = {
    "constant": "constant_with_warmup",
    "linear": "linear",
    "cosine": "cosine",
    "cosine_with_restarts": "cosine_with_restarts",
}


def _sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


@pytest.mark.parametrize("restarts", [1, 3])
@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("kind", LR_KINDS)
def test_lr_factor_matches_diffusers(kind, warmup, restarts):
    from diffusers.optimization import get_scheduler

    total = 100
    opt_ref, opt_ours = _sgd(), _sgd()
    ref = get_scheduler(
        _DIFFUSERS_NAME[kind], opt_ref, num_warmup_steps=warmup, num_training_steps=total, num_cycles=restarts
    )
    ours = make_lr_scheduler(opt_ours, kind, warmup, total, restarts)
    for step in range(total + 1):
        expected = ref.get_last_lr()[0]
        assert lr_factor(step, total, kind, warmup, restarts) == expected, step
        assert ours.get_last_lr()[0] == expected, step
        for opt, sched in ((opt_ref, ref), (opt_ours, ours)):
            opt.step()
            sched.step()


def test_lr_factor_refuses_nonsense():
    with pytest.raises(ValueError, match="lr schedule"):
        lr_factor(0, 10, "step", 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_factor(0, 10, "linear", 11)
    with pytest.raises(ValueError, match="restarts"):
        lr_factor(0, 10, "cosine_with_restarts", 0, restarts=0)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    "kind,module",
    [
        ("adamw", "torch"),
        pytest.param(
            "lion", "lion_pytorch", marks=pytest.mark.skipif(not _installed("lion_pytorch"), reason="no lion-pytorch")
        ),
        pytest.param(
            "prodigy", "prodigyopt", marks=pytest.mark.skipif(not _installed("prodigyopt"), reason="no prodigyopt")
        ),
    ],
)
def test_make_optimizer_steps(kind, module):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    before = w.detach().clone()
    opt = make_optimizer([{"params": [w]}], kind, lr=1.0 if kind == "prodigy" else 1e-2)
    assert type(opt).__module__.split(".")[0] == module
    (w**2).sum().backward()
    opt.step()
    assert not torch.equal(w.detach(), before)


@pytest.mark.parametrize("kind,package", [("lion", "lion-pytorch"), ("prodigy", "prodigyopt")])
def test_make_optimizer_missing_package(monkeypatch, kind, package):
    monkeypatch.setitem(sys.modules, {"lion": "lion_pytorch", "prodigy": "prodigyopt"}[kind], None)
    with pytest.raises(InputError, match=package):
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], kind, lr=1e-3)
