"""Early stopping (fit(patience=N), derive train --patience N): a run that overfits stops, its best
epoch's parameters and optimizer state come back (equal to a run of exactly that many epochs),
a patience that never runs out changes nothing, restarts keep their own watch, and a resumed run
goes on counting as one run would."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from derive.data import load_dataset
from derive.errors import DeriveError
from derive.runtime.checkpoint import load_checkpoint
from derive.runtime.command import save_result
from derive.runtime.early_stopping import Watch
from derive.runtime.fit import fit

PATIENCE = 10


@pytest.fixture(scope="module")
def small():
    """120 rows of breast_cancer, half held out: adam at lr 0.01 overfits within 200 epochs."""
    d = load_dataset("breast_cancer")
    return d.X[:120], d.Y[:120]


@pytest.fixture(scope="module")
def module():
    return importlib.import_module("generated.breast_cancer")  # adam: moments to restore too


def _fit(module, data, **kw):
    X, Y = data
    kw = {"epochs": 200, "batch_size": 16, "val_split": 0.5, "standardize": True, "hyper": {"lr": 0.01}, **kw}
    return fit(module, X, Y, **kw)


def _same_run(a_params, a_state, b_params, b_state):
    assert set(a_params) == set(b_params) and set(a_state) == set(b_state)
    for k in a_params:
        np.testing.assert_array_equal(a_params[k], b_params[k], err_msg=k)
    for k in a_state:
        np.testing.assert_array_equal(a_state[k], b_state[k], err_msg=k)


@pytest.fixture(scope="module")
def stopped(module, small):
    return _fit(module, small, patience=PATIENCE)


def test_an_overfitting_run_stops_and_restores_its_best_epoch(module, small, stopped):
    m = stopped.metrics
    best, stop = m["best_epoch"], m["stopped_epoch"]
    assert stop is not None and stop < 200 and stop == best + PATIENCE and m["epochs"] == stop
    val = stopped.history["val_loss"][0]
    assert np.isfinite(val[:stop]).all() and np.isnan(val[stop:]).all()  # measured every epoch, none after
    assert int(np.argmin(val[:stop])) + 1 == best and (val[best:stop] >= val[best - 1]).all()
    assert m["val_loss"] == m["best_val_loss"] == val[best - 1]
    # the parameters and the optimizer state (adam's moments, t, epoch) are those of epoch `best`
    straight = _fit(module, small, epochs=best)
    _same_run(stopped.params, stopped.state, straight.params, straight.state)
    assert stopped.state["epoch"] == best
    assert (f"stopped early at epoch {stop}: validation loss had not improved for {PATIENCE} epochs since "
            f"epoch {best} (best {val[best - 1]:.6g}); restored the parameters of epoch {best}") in stopped.summary()


def test_a_patience_that_never_runs_out_changes_nothing(module, small, stopped):
    """Up to the epoch it would stop at, with one more epoch of patience: the final parameters
    are kept (no restore), bit for bit those of a run without early stopping."""
    stop = stopped.metrics["stopped_epoch"]
    plain = _fit(module, small, epochs=stop)
    patient = _fit(module, small, epochs=stop, patience=PATIENCE + 1)
    assert patient.metrics["stopped_epoch"] is None and patient.metrics["epochs"] == stop
    _same_run(patient.params, patient.state, plain.params, plain.state)
    np.testing.assert_array_equal(patient.history["loss"], plain.history["loss"])
    assert patient.metrics["val_loss"] == plain.metrics["val_loss"]
    assert "no early stop" in patient.summary()
    longer = _fit(module, small, epochs=30, patience=500)
    _same_run(longer.params, longer.state, *(lambda r: (r.params, r.state))(_fit(module, small, epochs=30)))


def test_watch_counts_as_keras_does():
    """Strictly lower is an improvement (min_delta 0); equal or NaN is not."""
    w = Watch(2)
    p, s = {"W1": np.zeros(1)}, {"t": 0, "epoch": 0}
    assert [w.update(e, v, p, s) for e, v in enumerate([3.0, 2.0, 2.0, 1.5, float("nan"), 1.5], 1)] == \
        [False, False, False, False, False, True]
    assert (w.best_epoch, w.best_loss, w.stopped_epoch, w.wait) == (4, 1.5, 6, 2)


def test_patience_needs_a_validation_split(module, small, tmp_path):
    with pytest.raises(DeriveError, match="val_split is 0"):
        _fit(module, small, val_split=0.0, patience=3)
    with pytest.raises(DeriveError, match="patience must be an integer >= 1"):
        _fit(module, small, patience=0)
    r = CliRunner().invoke(main, ["train", "breast_cancer", "--val-split", "0", "--patience", "3", "--epochs", "1"])
    assert r.exit_code == 1 and "error: --patience 3 watches the validation loss" in r.output, r.output
    assert "epoch" not in r.output.replace("--patience", "")  # refused before training


def test_restarts_keep_their_own_patience(module, small):
    res = _fit(module, small, restarts=3, patience=PATIENCE)
    stops = res.metrics["stopped_epochs"]
    for k, watch in enumerate(res.watches):
        val = res.history["val_loss"][k]
        last = watch.stopped_epoch or 200
        assert np.isfinite(val[:last]).all() and np.isnan(val[last:]).all()
        assert watch.best_loss == np.min(val[:last])
    assert len(set(stops)) > 1  # the runs stop at their own epochs
    assert res.best == int(np.argmin([w.best_loss for w in res.watches]))
    assert res.metrics["val_loss"] == res.watches[res.best].best_loss
    assert f"{sum(s is not None for s in stops)} stopped early" in res.summary()
    alone = _fit(module, small, patience=PATIENCE)  # run 0 trained alone: the same stop, the same best epoch
    assert alone.metrics["stopped_epoch"] == stops[0]
    _same_run(res.watches[0].best_run[0], res.watches[0].best_run[1], alone.params, alone.state)


def test_resume_goes_on_counting(module, small, stopped, tmp_path):
    """Trained part of the way (past the best epoch, not yet out of patience), saved and resumed
    with the same patience: the run stops at the same epoch and goes back to the same best epoch,
    whose parameters came through the checkpoint."""
    best, stop = stopped.metrics["best_epoch"], stopped.metrics["stopped_epoch"]
    middle = (best + stop) // 2
    first = _fit(module, small, epochs=middle, patience=PATIENCE)
    assert first.metrics["stopped_epoch"] is None and first.metrics["best_epoch"] == best
    path = save_result(first, str(tmp_path / "first.npz"))
    ck = load_checkpoint(path, module)
    assert ck.state["epoch"] == middle and ck.best[1]["epoch"] == best
    assert ck.meta["early_stopping"] == {"patience": PATIENCE, "best_epoch": best, "wait": middle - best,
                                         "best_val_loss": stopped.metrics["best_val_loss"], "stopped_epoch": None}
    second = fit(module, *small, epochs=200, batch_size=16, resume=path, patience=PATIENCE)
    assert second.metrics["stopped_epoch"] == stop and second.metrics["best_epoch"] == best
    _same_run(second.params, second.state, stopped.params, stopped.state)
    # a stopped run's file holds the restored parameters; its record says where it stopped
    path = save_result(stopped, str(tmp_path / "stopped.npz"))
    ck = load_checkpoint(path, module)
    assert ck.state["epoch"] == best and ck.best is None
    assert ck.meta["early_stopping"]["stopped_epoch"] == stop and ck.meta["metrics"]["stopped_epoch"] == stop
    _same_run(ck.params, ck.state, stopped.params, stopped.state)


def test_checkpoints_without_a_record_and_damaged_best_epochs(module, small, stopped, tmp_path):
    """A file saved without patience (as every older file) resumes with a fresh watch; a best
    epoch's parameters that are not finite are refused by name."""
    from derive.runtime.checkpoint import CheckpointError

    plain = _fit(module, small, epochs=5)
    path = save_result(plain, str(tmp_path / "plain.npz"))
    assert "early_stopping" not in load_checkpoint(path).meta and load_checkpoint(path).best is None
    go_on = fit(module, *small, epochs=200, batch_size=16, resume=path, patience=PATIENCE)
    assert go_on.watches[0].best_epoch > 5 and go_on.metrics["stopped_epoch"] is not None
    best, stop = stopped.metrics["best_epoch"], stopped.metrics["stopped_epoch"]
    path = save_result(_fit(module, small, epochs=(best + stop) // 2, patience=PATIENCE), str(tmp_path / "m.npz"))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["best_param/W1"] = arrays["best_param/W1"].copy()
    arrays["best_param/W1"][0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="best-epoch parameter 'W1' is not a finite"):
        load_checkpoint(tmp_path / "bad.npz")


def test_cli_patience(tmp_path, small):
    X, Y = small
    csv = tmp_path / "bc.csv"
    csv.write_text("\n".join([",".join([f"x{j}" for j in range(X.shape[1])] + ["y"])]
                             + [",".join(f"{v:.17g}" for v in row) + f",{int(y)}" for row, (y,) in zip(X, Y)]) + "\n")
    r = CliRunner().invoke(main, ["train", "breast_cancer", "--data", str(csv), "--target", "y", "--epochs", "200",
                                  "--batch-size", "16", "--val-split", "0.5", "--standardize", "--lr", "0.01",
                                  "--patience", str(PATIENCE), "--save", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.output
    assert "early stopping with patience 10" in r.output and "stopped early at epoch" in r.output
    ck = load_checkpoint(tmp_path / "m.npz")
    assert ck.meta["settings"]["patience"] == PATIENCE and ck.meta["early_stopping"]["stopped_epoch"] is not None
