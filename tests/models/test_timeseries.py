"""forecaster / ts_classifier: RevIN's exact inverse, padding changes nothing, pooling, training, errors."""
from __future__ import annotations

import pytest
import torch

from ssmkit.cli.main import main
from ssmkit.testing import assert_close_rel, rel_err
from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.revin import RevIN, masked_mean_std
from ssmkit.models.timeseries import (
    Forecaster, ForecasterConfig, TsClassifier, TsClassifierConfig, last_window, masked_pool,
)
from ssmkit.tasks import create_task
from ssmkit.training import TrainConfig, fit

QUIET = dict(progress=False, log_every=1000)


def _bb(mixer: str = "s4d", d: int = 8) -> BackboneConfig:
    return BackboneConfig(d_model=d, n_layers=2, mixer=mixer)


def _forecaster(mixer="s4d", C=2, horizon=5, **cfg) -> Forecaster:
    torch.manual_seed(0)
    return create_model("forecaster", _bb(mixer), DataSpec("forecast", 0, d_input=C, horizon=horizon), **cfg).double()


def _affine_revin(C: int) -> RevIN:
    rev = RevIN(C, affine=True).double()
    with torch.no_grad():  # away from the identity, so that the affine part is exercised
        rev.weight.copy_(torch.linspace(0.5, 2.0, C, dtype=torch.float64))
        rev.bias.copy_(torch.linspace(-1.0, 1.0, C, dtype=torch.float64))
    return rev


# ---------------------------------------------------------------- RevIN


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_revin_denormalize_is_the_exact_inverse(affine):
    g = torch.Generator().manual_seed(0)
    x = 100.0 + 30.0 * torch.randn(3, 17, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, :5] = False
    mask[2, 8:11] = False
    rev = _affine_revin(4) if affine else RevIN(4, affine=False).double()
    z, stats = rev.normalize(x, mask)
    back = rev.denormalize(z, stats)
    assert_close_rel(back[mask], x[mask], 1e-13)
    assert (z[~mask] == 0).all()


def test_revin_statistics_are_those_of_the_real_positions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    x[0, 6:] = float("nan")  # padding must not leak, whatever it holds
    mean, std = masked_mean_std(x, mask, eps=1e-5)
    for b, n in ((0, 6), (1, 9)):
        real = x[b, :n]
        assert_close_rel(mean[b, 0], real.mean(0), 1e-13)
        assert_close_rel(std[b, 0], (real.var(0, unbiased=False) + 1e-5).sqrt(), 1e-13)
    z, _ = RevIN(3, affine=False).double().normalize(x, mask)
    assert torch.isfinite(z).all()
    assert_close_rel(z[0, :6].mean(0), torch.zeros(3, dtype=torch.float64), 1e-12)


def test_revin_forecaster_is_equivariant_to_level_and_scale():
    """With RevIN (no eps), f(a x + b) = a f(x) + b: the de-normalization is applied correctly."""
    model = _forecaster("lstm", revin="plain", eps=1e-300)
    x = torch.randn(2, 12, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_close_rel(model(7.0 * x + 3.0), 7.0 * model(x) + 3.0, 1e-10)


# ---------------------------------------------------------------- padding and shapes


def _pad(row: torch.Tensor, where: str, n_pad: int, g: torch.Generator):
    """(L, C) row -> (L + n_pad, C) with garbage at the padded places, and its mask."""
    L, C = row.shape
    junk = 1e3 * torch.randn(n_pad, C, generator=g, dtype=row.dtype)
    parts = {"left": (junk, row), "right": (row, junk), "middle": (row[: L // 2], junk, row[L // 2:])}[where]
    flags = {"left": (False, True), "right": (True, False), "middle": (True, False, True)}[where]
    x = torch.cat(parts)
    mask = torch.cat([torch.full((len(p),), f) for p, f in zip(parts, flags)])
    return x, mask


@pytest.mark.parametrize("mixer", ["s4d", "lstm", "attention"])
@pytest.mark.parametrize("head, ci", [("last", False), ("flatten", False), ("flatten", True)],
                         ids=["last", "flatten", "flatten-ci"])
def test_forecaster_padding_in_the_lookback_changes_nothing(mixer, head, ci):
    model = _forecaster(mixer, head=head, window=6, channel_independent=ci)
    g = torch.Generator().manual_seed(3)
    rows = [torch.randn(L, 2, generator=g, dtype=torch.float64) for L in (11, 4)]  # 4 < window: zero filled
    padded, masks = zip(*(_pad(r, w, 13 - len(r), g) for r, w in zip(rows, ("left", "middle"))))
    out = model(torch.stack(padded), mask=torch.stack(masks))
    assert out.shape == (2, 5, 2)
    for b, row in enumerate(rows):
        assert_close_rel(out[b], model(row[None])[0], 1e-10)


def test_forecaster_shapes_and_channel_independence():
    model = _forecaster(C=3, horizon=4, channel_independent=True)
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    out = model(x)
    assert out.shape == (2, 4, 3)
    # channel c of row b is forecast alone: a univariate model on that channel gives the same numbers
    for c in range(3):
        z, stats = model.revin.normalize(x)
        single = model.head(model.backbone(model.encoder(z[:, :, c:c + 1]))[:, -1])
        expect = (single - model.revin.bias[c]) / model.revin.weight[c] * stats[1][:, :, c] + stats[0][:, :, c]
        assert_close_rel(out[:, :, c], expect, 1e-12)


def test_last_window_takes_the_last_real_positions_in_order():
    h = torch.arange(1.0, 7.0).view(1, 6, 1).repeat(2, 1, 1)  # positions 1..6
    mask = torch.tensor([[True, False, True, True, False, True], [False, False, False, False, True, True]])
    got = last_window(h, mask, 3)[..., 0]
    assert got.tolist() == [[3.0, 4.0, 6.0], [0.0, 5.0, 6.0]]


# ---------------------------------------------------------------- classifier


def test_masked_pooling_equals_hand_computation():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 1, 0]], dtype=torch.bool)
    for b in range(3):
        real = h[b][mask[b]]
        assert_close_rel(masked_pool(h, mask, "mean")[b], real.sum(0) / len(real), 1e-14)
        assert torch.equal(masked_pool(h, mask, "max")[b], torch.stack([real[:, d].max() for d in range(5)]))
        assert torch.equal(masked_pool(h, mask, "last")[b], real[-1])
    assert torch.equal(masked_pool(h, None, "max"), h.amax(1))
    assert torch.equal(masked_pool(h, None, "last"), h[:, -1])


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
@pytest.mark.parametrize("norm", ["none", "affine"])
def test_classifier_variable_length_rows_equal_the_rows_alone(pool, norm):
    torch.manual_seed(0)
    model = create_model("ts_classifier", _bb("s4d"), DataSpec("classify", 4, d_input=3), pooling=pool,
                         instance_norm=norm).double()
    assert isinstance(model, TsClassifier) and model.pool == pool
    g = torch.Generator().manual_seed(5)
    rows = [torch.randn(L, 3, generator=g, dtype=torch.float64) for L in (9, 5, 2)]
    x = torch.full((3, 9, 3), float("nan"), dtype=torch.float64)  # right padding as the UCR batches have it
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for b, r in enumerate(rows):
        x[b, : len(r)], mask[b, : len(r)] = r, True
    out = model(x, mask=mask)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    for b, r in enumerate(rows):
        assert_close_rel(out[b], model(r[None])[0], 1e-10)


def test_classifier_pool_falls_back_to_the_runs_pool():
    spec = DataSpec("classify", 2, d_input=1)
    assert create_model("ts_classifier", _bb(), spec, "last").pool == "last"
    assert create_model("ts_classifier", _bb(), spec, "last", pooling="max").pool == "max"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("cls, cfg, field", [
    (ForecasterConfig, {"head": "mean"}, "head"), (ForecasterConfig, {"window": 0}, "window"),
    (ForecasterConfig, {"revin": "yes"}, "revin"), (ForecasterConfig, {"eps": 0.0}, "eps"),
    (TsClassifierConfig, {"pooling": "sum"}, "pooling"), (TsClassifierConfig, {"instance_norm": "z"}, "instance_norm"),
])
def test_bad_configs_name_the_field(cls, cfg, field):
    with pytest.raises(ValueError, match=f"invalid config value for '{field}'"):
        cls(**cfg)


def test_wrong_task_kind_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="'forecaster' needs a forecast task"):
        create_model("forecaster", _bb(), DataSpec("classify", 3))
    with pytest.raises(ValueError, match="'ts_classifier' needs a classify task"):
        create_model("ts_classifier", _bb(), DataSpec("forecast", 0, horizon=2))
    with pytest.raises(ValueError, match="token inputs"):
        create_model("ts_classifier", _bb(), DataSpec("classify", 3, vocab_size=10))
    model = _forecaster(C=2)
    with pytest.raises(ValueError, match=r"\(B, L, C=2\)"):
        model(torch.randn(2, 8, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no real position"):
        model(torch.randn(2, 8, 2, dtype=torch.float64), mask=torch.tensor([[True] * 8, [False] * 8]))


def test_dt_is_passed_to_the_backbone_per_channel_sequence():
    model = _forecaster(C=3, channel_independent=True)
    seen = {}

    def fake(h, mask=None, dt=None):
        seen["dt"], seen["mask"] = dt, mask
        return h

    model.backbone.forward = fake
    dt = torch.rand(2, 6, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    model(torch.randn(2, 6, 3, dtype=torch.float64), mask=mask, dt=dt)
    assert torch.equal(seen["dt"], dt.repeat_interleave(3, 0)) and seen["mask"].shape == (6, 6)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("task_name, cfg, arch, arch_cfg", [
    ("forecast", {"series": "sunspots"}, "forecaster", {"head": "flatten", "window": 8}),
    ("ucr", {"dataset": "JapaneseVowels"}, "ts_classifier", {"pooling": "max", "instance_norm": "plain"}),
], ids=["forecast-sunspots", "ucr-japanesevowels"])
def test_one_training_step_through_the_loop(task_name, cfg, arch, arch_cfg):
    task = create_task(task_name, **cfg)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=1, mixer="s4d"), arch=arch, **arch_cfg)
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(task, model, TrainConfig(steps=1, batch_size=8, device="cpu", **QUIET), log=lambda s: None)
    assert result["steps"] == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    metric = "test_mse" if task.info.kind == "forecast" else "test_accuracy"
    assert torch.isfinite(torch.tensor(result[metric]))


def test_cli_trains_the_forecaster(tmp_path, capsys):
    args = ["train", "--task", "forecast", "--mixer", "s4d", "--set", "arch=forecaster", "--set", "arch.head=last",
            "--set", "d_model=8", "--set", "n_layers=1", "--set", "steps=2", "--set", "batch_size=8",
            "--set", "progress=false", "--set", "task.series=nile", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test mse" in out and "test mae" in out
    assert "(seasonal naive (m=1)" in out  # the yardstick printed beside each error
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 0
    assert "test mse" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(tmp_path), "--split", "val"]) == 0
    assert "seasonal naive" not in capsys.readouterr().out  # the baseline is scored on test only


def test_forecaster_and_classifier_take_time_deltas():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 9, 2, generator=g, dtype=torch.float64)
    ones = torch.ones(2, 9, dtype=torch.float64)
    for model in (_forecaster("s4d", channel_independent=True),
                  create_model("ts_classifier", _bb("s4d"), DataSpec("classify", 3, d_input=2)).double()):
        assert_close_rel(model(x, dt=ones), model(x), 1e-10)  # unit gaps are the regular model
        dt = 0.1 + torch.rand(2, 9, generator=g, dtype=torch.float64)
        assert rel_err(model(x, dt=dt), model(x)) > 1e-3  # the gaps reach the layers
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[0, :3] = False
        padded_dt = dt.clone()
        padded_dt[0, :3] = float("nan")  # never read at padded positions
        out = model(x, mask=mask, dt=padded_dt)
        assert_close_rel(out[0], model(x[:1, 3:], dt=dt[:1, 3:])[0], 1e-10)
    with pytest.raises(ValueError, match="time deltas"):
        _forecaster("lstm")(x, dt=ones)
