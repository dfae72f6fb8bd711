"""The training workflow end to end: fit() and `derive train` / `derive predict` on bundled data,
divergence, restarts, save -> load -> predict, resume, gradient diagnostics, progress output."""

from __future__ import annotations

import importlib
import io
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from derive.data import load_dataset
from derive.errors import DeriveError
from derive.runtime.checkpoint import CheckpointError, load_checkpoint
from derive.runtime.fit import Diverged, fit, gradient_warnings
from derive.runtime.progress import TerminalProgress


@pytest.fixture(scope="module")
def cancer():
    return load_dataset("breast_cancer")


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def _run(runner, *args):
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


# --------------------------------------------------------------------------- CLI on bundled data


def test_train_cli_on_bundled_breast_cancer_saves_and_predicts(runner, tmp_path, cancer):
    save = tmp_path / "bc.npz"
    r = _run(runner, "train", "breast_cancer", "--epochs", 8, "--standardize", "--save", save, "--log-every", 4)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "derive show breast_cancer" in out and "generated/breast_cancer.py lists every equation" in out
    assert "epoch 4/8" in out and "epoch 8/8" in out
    assert "val loss" in out and "accuracy" in out and "8 epochs in" in out
    assert re.search(r"compiling or loading the kernels took \d+\.\d\d s before", out), out
    ck = load_checkpoint(save)
    assert ck.name == "breast_cancer" and ck.standardizer is not None and ck.state["epoch"] == 8
    assert ck.meta["targets"] == ["malignant"] and ck.meta["metrics"]["val_accuracy"] > 0.85
    r = _run(runner, "predict", save, "--data", "breast_cancer")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == "malignant,p_1" and len(lines) == 1 + cancer.n_samples  # the label, P(class 1)
    module = importlib.import_module("generated.breast_cancer")
    expected = module.forward(ck.params, ck.standardizer.transform(cancer.X))
    got = np.array([line.split(",") for line in lines[1:]], dtype=float)
    np.testing.assert_allclose(got[:, 1], expected[:, 0], rtol=1e-8)
    np.testing.assert_array_equal(got[:, 0], expected[:, 0] >= 0.5)
    inputs = tmp_path / "new_rows.csv"  # the inputs only, as for new patients
    inputs.write_text(",".join(cancer.feature_names) + "\n"
                      + "\n".join(",".join(f"{v:.17g}" for v in row) for row in cancer.X[:7]) + "\n")
    r = _run(runner, "predict", save, "--data", inputs, "-o", tmp_path / "pred.csv")
    assert r.exit_code == 0, r.output
    got = np.loadtxt(tmp_path / "pred.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(got[:, 1], expected[:7, 0], rtol=1e-8)


def test_train_cli_on_a_csv_file_with_plot(runner, tmp_path):
    moons = load_dataset("moons", n=120, seed=1)
    csv = tmp_path / "moons.csv"
    rows = ["x1,x2,label"] + [f"{a:.17g},{b:.17g},{int(c)}" for (a, b), (c,) in zip(moons.X, moons.Y)]
    csv.write_text("\n".join(rows) + "\n")
    png = tmp_path / "moons.png"
    r = _run(runner, "train", "moons", "--data", csv, "--target", "label", "--epochs", 30, "--restarts", 2,
             "--plot", png, "--lr", 0.02, "--batch-size", 16)
    assert r.exit_code == 0, r.output
    assert "best of 2 restarts" in r.output and "lr=0.02" in r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000


@pytest.mark.parametrize("args, message", [
    (["moons", "--data", "{csv}"], "--target COL"),
    (["moons", "--data", "{csv}", "--target", "lable"], "lable"),
    (["moons", "--data", "{bad}", "--target", "label"], "line 3"),
    (["moons", "--data", "{outside}", "--target", "label"], "within [0, 1]"),
    (["moons", "--data", "moon"], "'moons'"),
    (["moons", "--data", "moons", "--momentom", "0.9"], "--beta1"),
    (["moons", "--data", "moons", "--beta1", "x"], "needs a number"),
    (["moons", "--data", "moons", "--beta1", "1.5"], "beta1 must lie in"),
    (["moons", "--data", "diabetes"], "10 columns but the model takes 2"),
    (["xor_nonexistent", "--data", "xor"], "no model 'xor_nonexistent'"),
    (["moons", "--data", "moons", "--resume", "{missing}"], "no such checkpoint file"),
])
def test_train_cli_errors_are_one_clear_line(runner, tmp_path, args, message):
    csv = tmp_path / "ok.csv"
    csv.write_text("x1,x2,label\n0,1,1\n1,0,1\n0,0,0\n")
    (tmp_path / "bad.csv").write_text("x1,x2,label\n0,1,1\n1,abc,1\n")
    (tmp_path / "outside.csv").write_text("x1,x2,label\n0,1,1\n1,0,2\n")
    paths = {"csv": csv, "bad": tmp_path / "bad.csv", "outside": tmp_path / "outside.csv",
             "missing": tmp_path / "missing.npz"}
    r = _run(runner, "train", *[a.format(**paths) for a in args], "--epochs", 1)
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and message in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------- divergence


def _ramp(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * 10
    return X, X @ np.array([[1.0], [-2.0], [0.5]])


def test_divergence_stops_at_once_and_keeps_the_last_finite_parameters():
    """A huge learning rate: fit raises Diverged naming epoch and batch, and the parameters are those
    a Python loop over step() had at its last finite loss (before the update that broke it)."""
    X, Y = _ramp()
    with pytest.raises(Diverged) as info:
        fit("linear", X, Y, epochs=50, batch_size=8, val_split=0.0, hyper={"lr": 5.0})
    err = info.value
    assert "epoch" in str(err) and "batch" in str(err) and "smaller learning rate (--lr 0.5)" in str(err)
    got = err.result.params
    assert all(np.isfinite(v).all() for v in got.values())

    lin = importlib.import_module("generated.linear")
    from derive.data import train_val_split

    X, Y, _, _ = train_val_split(X, Y, 0.0, 0)  # fit's row order
    p = lin.init_params(0)
    s = lin.init_state(p)
    n, B = len(X), 8
    previous = None
    for e in range(50):
        perm = lin.permutations(n, 1, seed=0, start=e)[0]
        for b in range(0, n, B):
            before = {k: v.copy() for k, v in p.items()}
            value = lin.step(p, s, X[perm[b:b + B]], Y[perm[b:b + B]], lr=5.0)
            if not np.isfinite(value):
                expected = previous
                break
            previous = before
        else:
            s["epoch"] += 1
            continue
        break
    assert all(np.array_equal(got[k], expected[k]) for k in got)
    assert np.isfinite(lin.loss(got, X, Y))


def test_divergence_exits_3_and_overwrites_nothing(runner, tmp_path):
    X, Y = _ramp()
    csv = tmp_path / "ramp.csv"
    csv.write_text("a,b,c,y\n" + "\n".join(",".join(f"{v:.17g}" for v in (*x, y[0])) for x, y in zip(X, Y)) + "\n")
    save = tmp_path / "keep.npz"
    save.write_bytes(b"the previous model")
    r = _run(runner, "train", "linear", "--data", csv, "--target", "y", "--lr", 5, "--epochs", 50,
             "--save", save, "--plot", tmp_path / "p.png")
    assert r.exit_code == 3, r.output
    assert "training diverged" in r.output and "clipping" in r.output
    assert save.read_bytes() == b"the previous model" and not (tmp_path / "p.png").exists()


# --------------------------------------------------------------------------- restarts, save/load, resume


def test_restarts_are_distinct_and_the_best_is_picked(cancer):
    res = fit("breast_cancer", data=cancer, epochs=6, restarts=3, standardize=True, seed=5)
    finals = res.history["val_loss"][:, -1]
    assert len(set(finals.tolist())) == 3 and res.best == int(np.argmin(finals))
    assert res.seeds == (5, 6, 7)
    assert res.metrics["spread_min"] == pytest.approx(finals.min())
    assert res.metrics["val_loss"] == pytest.approx(finals.min())  # the best run's final validation loss
    firsts = [res.history["loss"][k, 0] for k in range(3)]
    assert len(set(firsts)) == 3  # different initialisations


def test_save_load_predict_round_trip_and_resume(tmp_path, cancer):
    from derive.runtime.command import save_result

    a = fit("breast_cancer", data=cancer, epochs=4, standardize=True)
    path = save_result(a, str(tmp_path / "run.npz"), cancer)
    ck = load_checkpoint(path, a.module)
    np.testing.assert_array_equal(a.predict(cancer.X), a.module.forward(ck.params, ck.standardizer.transform(cancer.X)))
    b = fit("breast_cancer", data=cancer, epochs=3, resume=path)
    straight = fit("breast_cancer", data=cancer, epochs=7, standardize=True)
    assert all(np.array_equal(b.params[k], straight.params[k]) for k in b.params)
    assert b.state["epoch"] == 7 and b.state["t"] == straight.state["t"]


def test_resume_keeps_the_saved_seed_and_split(tmp_path, cancer):
    """Resuming without --seed/--val-split continues with the run's own split and shuffles."""
    from derive.runtime.command import save_result

    a = fit("breast_cancer", data=cancer, epochs=2, standardize=True, seed=3, val_split=0.3)
    path = save_result(a, str(tmp_path / "run.npz"), cancer)
    b = fit("breast_cancer", data=cancer, epochs=2, resume=path)
    straight = fit("breast_cancer", data=cancer, epochs=4, standardize=True, seed=3, val_split=0.3)
    assert all(np.array_equal(b.params[k], straight.params[k]) for k in b.params)
    assert b.settings["seed"] == 3 and b.settings["val_split"] == 0.3


def test_resume_into_another_model_is_refused(tmp_path, cancer):
    from derive.runtime.command import save_result

    a = fit("breast_cancer", data=cancer, epochs=1, standardize=True)
    path = save_result(a, str(tmp_path / "run.npz"), cancer)
    diabetes = load_dataset("diabetes")
    with pytest.raises(CheckpointError, match="breast_cancer"):
        fit("diabetes", data=diabetes, epochs=1, resume=path)


def test_fit_input_errors(cancer):
    with pytest.raises(DeriveError, match="epochs must be an integer >= 1"):
        fit("breast_cancer", data=cancer, epochs=0)
    with pytest.raises(DeriveError, match="unknown hyperparameter 'lrr'"):
        fit("breast_cancer", data=cancer, epochs=1, hyper={"lrr": 0.1})
    X = cancer.X.copy()
    X[3, 4] = np.nan
    with pytest.raises(DeriveError, match="row 4, column 5"):
        fit("breast_cancer", X, cancer.Y, epochs=1)


def test_fit_accepts_a_python_spec():
    from derive.runtime.models import cache_dir
    from derive.spec import Dense, Model

    # (the session's cache folder, tests/conftest.py: a process imports one derive_models package)
    d = load_dataset("circles", n=100)
    spec = Model("circles_net", 2, [Dense(8, "relu"), Dense(1, "sigmoid")], "bce", {"name": "adam", "lr": 0.05})
    res = fit(spec, data=d, epochs=40, batch_size=20, val_split=0.0)
    assert (cache_dir() / "derive_models" / "circles_net.py").exists()
    assert res.metrics["train_accuracy"] > 0.8 and "val_loss" not in res.metrics


# --------------------------------------------------------------------------- diagnostics and progress


def test_vanishing_gradients_are_reported_for_the_deep_sigmoid_net():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    Y = (X.sum(axis=1, keepdims=True) > 0).astype(float)
    res = fit("deep_sigmoid", X, Y, epochs=5, hyper={"lr": 0.5})
    assert any(w.startswith("vanishing gradients") and "saturating activations" in w for w in res.warnings)
    assert fit("xor", *(lambda d: (d.X, d.Y))(load_dataset("xor")), epochs=5).warnings == []


def test_gradient_warnings_thresholds():
    spec = {"layers": [[8, "relu"], [8, "relu"], [1, "identity"]]}
    g = np.array([[1e-5, 1.0, 1.0]] * 4)
    assert gradient_warnings(g, spec)[0].startswith("vanishing")
    assert gradient_warnings(np.array([[1e4, 1.0, 1.0]] * 4), spec)[0].startswith("exploding")
    assert gradient_warnings(np.array([[0.5, 1.0, 2.0]] * 4), spec) == []
    assert gradient_warnings(np.full((3, 3), np.nan), spec) == []


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    tty, log = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (log, False)):
        p = TerminalProgress(stream, is_tty)
        p.start(10, 0)
        p.update(10, 0.5, 0.6)
        p.line("epoch 10/10  loss 0.5")
        p.finish()
    assert "\r" in tty.getvalue() and "[########################]" in tty.getvalue()
    assert log.getvalue() == "epoch 10/10  loss 0.5\n"


def test_readme_main_job_runs_from_a_fresh_folder(runner, tmp_path):
    """Outside the repository (no derive.toml): the bundled models are used."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = _run(runner, "train", "diabetes", "--standardize", "--epochs", 3)
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    assert "train loss" in r.output and "accuracy" not in r.output and "R²" in r.output


def test_without_matplotlib_plots_fail_first_with_one_line(runner, tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = _run(runner, "train", "moons", "--epochs", 2, "--plot", tmp_path / "m.png")
    assert r.exit_code == 1 and "pip install 'derive[plot]'" in r.output and "epoch" not in r.output
    r = _run(runner, "plot-surface", "saddle", "-o", tmp_path / "s.png")
    assert r.exit_code == 1 and "pip install 'derive[plot]'" in r.output and "Traceback" not in r.output
    r = _run(runner, "train", "moons", "--epochs", 2, "--plot", tmp_path / "m.txt")
    assert r.exit_code == 1 and ".png" in r.output


def test_a_diverging_restart_drops_out_and_the_others_go_on(monkeypatch):
    lin = importlib.import_module("generated.linear")
    real = lin.init_params

    def init(seed=0, dtype=np.float64, init=None, widths=None):  # restart 1 starts where its loss overflows
        p = real(seed=seed, dtype=dtype, init=init, widths=widths)
        return {k: v * 1e200 for k, v in p.items()} if seed == 1 else p

    monkeypatch.setattr(lin, "init_params", init)
    X, Y = _ramp()
    res = fit(lin, X / 10, Y / 10, epochs=20, batch_size=8, restarts=3, hyper={"lr": 0.05})
    assert res.metrics["diverged_runs"] == 1 and res.best != 1
    assert np.isnan(res.history["loss"][1]).all() and np.isfinite(res.history["loss"][[0, 2]]).all()
    assert "1 diverged" in res.summary()


def test_a_catalogue_model_is_the_module_users_import():
    """fit() imports generated/<name>.py as generated.<name>: one module name per file, as
    Numba's on-disk cache requires (a second name made later processes fail to load it)."""
    from derive.runtime.models import load_model

    assert load_model("xor", "derive.toml") is importlib.import_module("generated.xor")
    assert load_model("xor") is importlib.import_module("generated.xor")


def test_a_cached_model_built_by_another_generator_is_rebuilt(tmp_path):
    """A model module in the cache records the spec, the runtime and the generator (templates,
    code generator, derivation) it was built from; one built by another version of any of them
    is rebuilt, not imported with stale kernels."""
    import re

    from derive.codegen.render import generator_hash
    from derive.runtime.models import _current, _file_hash
    from derive.spec import Model

    model = Model("cached_gen", inputs=2, layers=[[3, "tanh"], [1, "sigmoid"]], loss="bce")
    folder = tmp_path / "cachepkg"
    from derive.build import build

    folder.mkdir()
    build([model], [model], folder, "<python>", prune=False)
    path = folder / "cached_gen.py"
    assert _file_hash(path)[2] == generator_hash()
    text = path.read_text()
    path.write_text(re.sub(r"generator=[0-9a-f]+", "generator=000000000000", text))
    assert _file_hash(path)[2] == "000000000000"
    _current(model, folder, "<python>", [model])  # rebuilds before importing
    assert path.read_text() == text
