"""The shared training loop: it learns, checkpoints every epoch, and resumes after a kill."""

import csv

import pytest
import torch
from torch import nn

from pipeline_lib.training import TrainConfig, fit, latest_checkpoint


def regression_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def batches_of(x, y, bs=8):
    def batches(epoch, gen):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i:i + bs]
            yield x[idx], y[idx]
    return batches


def mse(model, batch):
    xb, yb = batch
    return ((model(xb) - yb) ** 2).mean()


def test_loss_decreases_and_artifacts_are_written(tmp_path):
    x, y = regression_problem()
    torch.manual_seed(0)  # initial weights independent of the tests that ran before
    model = nn.Linear(3, 1)
    res = fit(model, mse, batches_of(x, y), TrainConfig(epochs=6, lr=0.05), tmp_path, torch.device("cpu"))
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.1 * losses[0]
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
    assert len(list((tmp_path / "checkpoints").glob("epoch_*.pt"))) == 6


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    x, y = regression_problem()
    cfg = TrainConfig(epochs=5, lr=0.05, seed=3)
    torch.manual_seed(0)
    straight = nn.Linear(3, 1)
    fit(straight, mse, batches_of(x, y), cfg, tmp_path / "a", torch.device("cpu"))

    calls = {"n": 0}

    def dying(model, batch):
        calls["n"] += 1
        if calls["n"] == 8 * 3 + 2:  # killed in the middle of epoch 4
            raise KeyboardInterrupt
        return mse(model, batch)

    torch.manual_seed(0)
    killed = nn.Linear(3, 1)
    with pytest.raises(KeyboardInterrupt):
        fit(killed, dying, batches_of(x, y), cfg, tmp_path / "b", torch.device("cpu"))
    assert latest_checkpoint(tmp_path / "b" / "checkpoints", cfg.fingerprint())["epoch"] == 2
    torch.manual_seed(123)  # a fresh process: other global RNG state, other initial weights
    resumed = nn.Linear(3, 1)
    res = fit(resumed, mse, batches_of(x, y), cfg, tmp_path / "b", torch.device("cpu"))
    assert res.resumed_from == 3 and res.epochs_run == 2
    torch.testing.assert_close(resumed.weight, straight.weight)


def test_fewer_epochs_end_at_their_own_epoch_not_a_longer_runs(tmp_path):
    """A rerun asking for fewer epochs than the checkpoints hold returns the model of ITS last epoch (the one a
    fresh run of that length gives), never the longer run's."""
    x, y = regression_problem()
    torch.manual_seed(0)
    fit(nn.Linear(3, 1), mse, batches_of(x, y), TrainConfig(epochs=5, lr=0.05, seed=3), tmp_path / "a",
        torch.device("cpu"))
    torch.manual_seed(0)
    fresh = nn.Linear(3, 1)
    fit(fresh, mse, batches_of(x, y), TrainConfig(epochs=2, lr=0.05, seed=3), tmp_path / "b", torch.device("cpu"))
    torch.manual_seed(0)
    shorter = nn.Linear(3, 1)
    res = fit(shorter, mse, batches_of(x, y), TrainConfig(epochs=2, lr=0.05, seed=3), tmp_path / "a",
              torch.device("cpu"))
    assert res.resumed_from == 2 and res.epochs_run == 0 and [h["epoch"] for h in res.history] == [1, 2]
    torch.testing.assert_close(shorter.weight, fresh.weight)


def test_corrupt_or_foreign_checkpoints_are_not_trusted(tmp_path):
    x, y = regression_problem()
    cfg = TrainConfig(epochs=2, lr=0.05)
    fit(nn.Linear(3, 1), mse, batches_of(x, y), cfg, tmp_path, torch.device("cpu"))
    (tmp_path / "checkpoints" / "epoch_0001.pt").write_bytes(b"torn")
    assert latest_checkpoint(tmp_path / "checkpoints", cfg.fingerprint())["epoch"] == 0
    assert latest_checkpoint(tmp_path / "checkpoints", TrainConfig(epochs=2, lr=0.01).fingerprint()) is None


def test_diverging_loss_is_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(nn.Linear(1, 1), lambda m, b: m(b).sum() * float("nan"), lambda e, g: [torch.ones(1, 1)],
            TrainConfig(epochs=1), tmp_path, torch.device("cpu"))


def test_metrics_and_parameter_change_are_logged_per_epoch(tmp_path):
    x, y = regression_problem()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def with_metrics(model, batch):
        loss = mse(model, batch)
        return loss, {"double_loss": 2 * loss.detach()}

    res = fit(model, with_metrics, batches_of(x, y), TrainConfig(epochs=3, lr=0.05), tmp_path, torch.device("cpu"))
    for h in res.history:
        assert h["double_loss"] == pytest.approx(2 * h["loss"], rel=1e-6)  # averaged like the loss
        assert h["param_change"] > 0
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert "double_loss" in rows[0] and float(rows[0]["param_change"]) > 0


def test_a_model_that_cannot_move_logs_zero_parameter_change(tmp_path):
    x, y = regression_problem()
    model = nn.Linear(3, 1)
    res = fit(model, mse, batches_of(x, y), TrainConfig(epochs=2, lr=1e-30), tmp_path, torch.device("cpu"))
    assert all(h["param_change"] < 1e-12 for h in res.history)


def test_lr_groups_give_a_parameter_group_its_own_rate(tmp_path):
    x, y = regression_problem()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    w0 = model[0].weight.detach().clone()
    b1 = model[1].weight.detach().clone()
    cfg = TrainConfig(epochs=1, lr=0.05, lr_groups=(("0.", 0.0),))  # first layer frozen by a zero rate
    fit(model, mse, batches_of(x, y), cfg, tmp_path, torch.device("cpu"))
    assert torch.equal(model[0].weight, w0)
    assert not torch.equal(model[1].weight, b1)


def test_lr_groups_prefix_matching_nothing_is_an_error(tmp_path):
    x, y = regression_problem()
    with pytest.raises(ValueError, match="shifts"):
        fit(nn.Linear(3, 1), mse, batches_of(x, y), TrainConfig(epochs=1, lr_groups=(("shifts", 1.0),)), tmp_path,
            torch.device("cpu"))


class _Payload:
    """Unpickling this runs code: the classic malicious-checkpoint shape."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_are_read_without_executing_embedded_code(tmp_path):
    from pipeline_lib.training import CheckpointError, load_checkpoint

    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "meta": _Payload()}, bad)
    with pytest.raises(CheckpointError, match="evil.pt") as err:
        load_checkpoint(bad)
    assert "weights_only=False" not in str(err.value)  # never suggests the unsafe way out
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_our_own_checkpoints_load_safely(tmp_path):
    from pipeline_lib.training import load_checkpoint, save_weights

    x, y = regression_problem()
    model = nn.Linear(3, 1)
    fit(model, mse, batches_of(x, y), TrainConfig(epochs=1, lr_groups=(("weight", 0.01),)), tmp_path,
        torch.device("cpu"))
    save_weights(model, tmp_path / "model.pt", {"backbone": "x", "train": {"sizes": (1, 2)}, "n": None})
    assert load_checkpoint(tmp_path / "model.pt")["meta"]["train"]["sizes"] == (1, 2)
    assert load_checkpoint(next((tmp_path / "checkpoints").glob("*.pt")))["epoch"] == 0


def test_training_twice_gives_bit_identical_weights_and_outputs(tmp_path):
    """Same seed, same settings, threads pinned as the workflow pins them: the same bits, not just close."""
    from pipeline_lib.snakemake_adapter import fix_threads

    before = torch.get_num_threads()
    fix_threads(2)
    try:
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(24, 3, 16, 16, generator=g), torch.rand(24, 1, generator=g)

        def batches(epoch, gen):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 6):
                yield x[order[i:i + 6]], y[order[i:i + 6]]

        def net():
            torch.manual_seed(5)
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 1))

        runs = []
        for name in ("a", "b"):
            model = net()
            fit(model, mse, batches, TrainConfig(epochs=2, lr=0.01, seed=3), tmp_path / name, torch.device("cpu"))
            with torch.no_grad():
                runs.append((model.state_dict(), model.eval()(x)))
        (wa, pa), (wb, pb) = runs
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert torch.equal(pa, pb)
    finally:
        torch.set_num_threads(before)
