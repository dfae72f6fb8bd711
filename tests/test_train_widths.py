"""Training at hidden widths other than the spec's: `derive train --widths`, ``fit(widths=...)``,
checkpoints that record the widths (save -> predict, resume, mismatches refused), and the sweep
summary's `derive train ... --widths` line. The models are the committed ``moons`` (2 -> 16 tanh ->
16 tanh -> 1 sigmoid, Adam) and ``xor`` (2 -> 8 tanh -> 1 sigmoid, SGD): no build, few epochs."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from click.testing import CliRunner

import generated.moons as moons
import generated.xor as xor
from cli import main
from derive.data import load_dataset, train_val_split
from derive.errors import DeriveError
from derive.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from derive.runtime.command import save_result
from derive.runtime.fit import fit


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run `derive` in an empty folder (the bundled models; no catalogue to rebuild)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def data():
    return load_dataset("moons")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- derive train --widths


def test_train_widths_saves_predicts_and_resumes(cli, tmp_path, data):
    r = cli("train", "moons", "--epochs", 4, "--widths", "24,8", "--save", "run.npz", "--log-every", 2)
    assert r.exit_code == 0, r.output
    assert ("model      moons: 2 -> 24 tanh -> 8 tanh -> 1 sigmoid; loss bce (hidden widths 24,8; the spec's are "
            "16,16)") in r.output
    assert "hidden widths 24,8; `derive predict`" in r.output
    ck = load_checkpoint(tmp_path / "run.npz", moons)
    assert ck.widths == (24, 8) and ck.meta["settings"]["widths"] == [24, 8]
    assert [ck.params[f"W{l}"].shape for l in (1, 2, 3)] == [(2, 24), (24, 8), (8, 1)]
    assert ck.state["m_W2"].shape == (24, 8) and ck.state["epoch"] == 4
    # the same run from Python, bit for bit
    straight = fit(moons, data=data, epochs=4, widths=(24, 8))
    assert _equal(ck.params, straight.params)

    r = cli("predict", "run.npz", "--data", "moons")
    assert r.exit_code == 0, r.output
    got = np.array([line.split(",") for line in r.output.strip().splitlines()[1:]], dtype=float)
    np.testing.assert_allclose(got[:, 1], moons.forward(ck.params, data.X)[:, 0], rtol=1e-8)

    # resume keeps the checkpoint's widths (with or without the same --widths): 4 + 3 epochs == 7
    r = cli("train", "moons", "--epochs", 3, "--resume", "run.npz", "--save", "more.npz")
    assert r.exit_code == 0, r.output
    assert "2 -> 24 tanh -> 8 tanh -> 1 sigmoid; loss bce (hidden widths 24,8 of the resumed run" in r.output
    r = cli("train", "moons", "--epochs", 3, "--resume", "run.npz", "--widths", "24,8", "--save", "same.npz")
    assert r.exit_code == 0, r.output
    seven = fit(moons, data=data, epochs=7, widths=(24, 8))
    for name in ("more.npz", "same.npz"):
        resumed = load_checkpoint(tmp_path / name, moons)
        assert resumed.widths == (24, 8) and resumed.state["epoch"] == 7
        assert _equal(resumed.params, seven.params)


def test_resume_with_other_widths_is_one_clear_line(cli, tmp_path):
    r = cli("train", "moons", "--epochs", 1, "--widths", "24,8", "--save", "run.npz")
    assert r.exit_code == 0, r.output
    for widths in ("16,16", "8,24"):
        r = cli("train", "moons", "--epochs", 1, "--resume", "run.npz", "--widths", widths, "--save", "x.npz")
        assert r.exit_code == 1, r.output
        lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in r.output
        assert f"run.npz was trained at hidden widths 24,8, not {widths} (--widths)" in lines[0]
        assert not (tmp_path / "x.npz").exists()
    # a run saved at the spec's widths refuses other widths too
    r = cli("train", "moons", "--epochs", 1, "--save", "spec.npz")
    assert r.exit_code == 0, r.output
    r = cli("train", "moons", "--epochs", 1, "--resume", "spec.npz", "--widths", "24,8")
    assert r.exit_code == 1 and "trained at hidden widths 16,16, not 24,8" in r.output


@pytest.mark.parametrize("model, widths, message", [
    ("moons", "24", "invalid value for --widths '24': 1 width given; model 'moons' has 2 hidden layers (16, 16): "
                    "give 2 whole numbers >= 1, e.g. --widths 16,16"),
    ("moons", "24,16,8", "3 widths given; model 'moons' has 2 hidden layers"),
    ("moons", "24,0", "invalid value for --widths '24,0': 0 is not a whole number >= 1"),
    ("moons", "-3,4", "-3 is not a whole number >= 1"),
    ("moons", "24,x", "'x' is not a whole number >= 1"),
    ("moons", "24,", "'' is not a whole number >= 1"),
    ("moons", "2.5,4", "'2.5' is not a whole number >= 1"),
    ("xor", "4,4", "model 'xor' has 1 hidden layer (8): give 1 whole number >= 1, e.g. --widths 8"),
    ("linear", "3", "model 'linear' has no hidden layer"),
])
def test_bad_widths_are_one_clear_line(cli, tmp_path, model, widths, message):
    r = cli("train", model, "--epochs", 1, "--widths", widths, "--save", "x.npz")
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [r.output.strip()]  # one line, before anything else is printed
    assert r.output.startswith("error: ") and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.npz").exists()


def test_the_spec_widths_given_are_the_default_run(cli, tmp_path):
    assert cli("train", "xor", "--epochs", 3, "--save", "a.npz").exit_code == 0
    r = cli("train", "xor", "--epochs", 3, "--widths", "8", "--save", "b.npz")
    assert r.exit_code == 0 and "the spec's are" not in r.output
    a, b = load_checkpoint(tmp_path / "a.npz", xor), load_checkpoint(tmp_path / "b.npz", xor)
    assert a.widths == b.widths == (8,) and _equal(a.params, b.params)


# --------------------------------------------------------------------------- fit(widths=...)


def test_fit_widths_is_the_module_trained_at_those_widths(data):
    """fit(widths=w) == init_params(seed, widths=w) -> init_state -> train on fit's split, bit for bit;
    restarts draw every run at those widths."""
    res = fit(moons, data=data, epochs=6, batch_size=16, seed=2, widths=[5, np.int64(3)])
    assert res.widths == (5, 3) and res.settings["widths"] == [5, 3]
    p = moons.init_params(seed=2, widths=(5, 3))
    s = moons.init_state(p)
    Xtr, Ytr, _, _ = train_val_split(data.X, data.Y, 0.2, 2)
    moons.train(p, s, np.ascontiguousarray(Xtr), np.ascontiguousarray(Ytr), epochs=6, batch_size=16, seed=2)
    assert _equal(res.params, p) and res.state["t"] == s["t"]
    many = fit(moons, data=data, epochs=2, restarts=2, widths=(5, 3))
    assert many.widths == (5, 3) and many.metrics["restarts"] == 2
    # the spec's widths, given, are the default run
    a, b = fit(xor, data=load_dataset("xor"), epochs=3), fit(xor, data=load_dataset("xor"), epochs=3, widths=(8,))
    assert a.settings["widths"] == b.settings["widths"] == [8] and _equal(a.params, b.params)


@pytest.mark.parametrize("widths, message", [
    ((16,), r"invalid value for widths: 1 width given; model 'moons' has 2 hidden layers \(16, 16\): give 2 whole "
            r"numbers >= 1$"),
    ((16, 0), "0 is not a whole number >= 1"),
    ((16, 2.0), "2.0 is not a whole number >= 1"),
    ((True, 4), "True is not a whole number >= 1"),
    ("24,16", "widths must be a sequence of whole numbers"),
    (24, "widths must be a sequence of whole numbers"),
])
def test_fit_bad_widths(data, widths, message):
    with pytest.raises(DeriveError, match=message):
        fit(moons, data=data, epochs=1, widths=widths)


def test_fit_resume_keeps_the_checkpoint_widths(tmp_path, data):
    a = fit(moons, data=data, epochs=3, seed=1, widths=(7, 5), patience=50)
    path = save_result(a, str(tmp_path / "run.npz"), data)
    b = fit(moons, data=data, epochs=2, resume=path, patience=50)
    c = fit(moons, data=data, epochs=2, resume=path, widths=(7, 5), patience=50)
    straight = fit(moons, data=data, epochs=5, seed=1, widths=(7, 5), patience=50)
    assert b.widths == c.widths == (7, 5) and b.settings["widths"] == [7, 5]
    assert _equal(b.params, straight.params) and _equal(c.params, straight.params)
    with pytest.raises(DeriveError, match=r"run.npz was trained at hidden widths 7,5, not 16,16 \(widths\)"):
        fit(moons, data=data, epochs=1, resume=path, widths=(16, 16))


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_records_the_widths_and_checks_them(tmp_path):
    p = moons.init_params(seed=0, widths=(3, 4))
    s = moons.init_state(p)
    with pytest.raises(CheckpointError, match=r"parameter 'W1' has shape \(2, 3\) but model 'moons' expects "
                                              r"\(2, 16\)"):
        save_checkpoint(tmp_path / "no.npz", moons, p, s)  # widths not given: the spec's
    with pytest.raises(CheckpointError, match="hidden widths .* do not fit model 'moons', which has 2 hidden"):
        save_checkpoint(tmp_path / "no.npz", moons, p, s, widths=(3,))
    assert not (tmp_path / "no.npz").exists()
    path = save_checkpoint(tmp_path / "ok.npz", moons, p, s, widths=(3, 4))
    ck = load_checkpoint(path, moons)
    assert ck.widths == (3, 4) and _equal(ck.params, p)
    spec_run = save_checkpoint(tmp_path / "spec.npz", moons, moons.init_params(), moons.init_state(moons.init_params()))
    assert load_checkpoint(spec_run, moons).widths == (16, 16)

    def rewrite(src, **changes):
        with np.load(src, allow_pickle=False) as z:
            entries = {k: z[k] for k in z.files}
        for key, value in changes.items():
            if value is None:
                entries.pop(key)
            else:
                entries[key] = value
        out = tmp_path / "edited.npz"
        np.savez(out, **entries)
        return out

    # a file whose widths entry says other widths than its arrays have, or is malformed, is refused
    with pytest.raises(CheckpointError, match=r"parameter 'W1' has shape \(2, 3\) but model 'moons' expects "
                                              r"\(2, 16\)"):
        load_checkpoint(rewrite(path, widths=np.array([16, 16])), moons)
    with pytest.raises(CheckpointError, match="hidden widths"):
        load_checkpoint(rewrite(path, widths=np.array([3])), moons)
    for bad in (np.array([3.0, 4.0]), np.array([3, 0]), np.array(3)):
        with pytest.raises(CheckpointError, match="the entry 'widths' must be a list of whole numbers >= 1"):
            load_checkpoint(rewrite(path, widths=bad))
    # files saved before widths were recorded hold the spec's widths
    legacy = load_checkpoint(rewrite(spec_run, widths=None), moons)
    assert legacy.widths is None and _equal(legacy.params, moons.init_params())
    with pytest.raises(CheckpointError, match=r"expects \(2, 16\)"):
        load_checkpoint(rewrite(path, widths=None), moons)


# --------------------------------------------------------------------------- the sweep's summary


def test_sweep_summary_prints_the_train_line_with_widths(cli, tmp_path):
    res = cli("sweep", "moons", "--grid", "width1=4,24", "--epochs", 3, "--out", "out", "--no-plots")
    assert res.exit_code == 0, res.output
    out = res.output
    best = next(line for line in out.splitlines() if line.startswith("best configuration"))
    width1 = int(best.split("width1=")[1].split()[0])
    assert width1 in (4, 24)
    line = next(line for line in out.splitlines() if line.startswith("train it"))
    assert line == ("train it   derive train moons --epochs 3 --batch-size 32 --seed 0 --val-split 0.2 "
                    f"--widths {width1},16")
    assert "note" not in out and "change the layers" not in out
    args = shlex.split(line.split(maxsplit=2)[2])[1:]  # after "derive"
    trained = cli(*args)  # derive train takes the configuration as it is printed
    assert trained.exit_code == 0, trained.output
    assert f"2 -> {width1} tanh -> 16 tanh -> 1 sigmoid" in trained.output


def test_sweep_train_line_has_no_widths_at_the_spec_widths():
    from derive.sweep.results import train_command

    values = {"epochs": 5, "batch_size": 8, "init": "default", "width1": 16, "width2": 16, **moons.HYPER}
    common = dict(data=None, target=None, spec=None, seed=0, val_split=0.2, standardize=False, dtype="float64",
                  patience=None)
    assert "--widths" not in train_command("moons", values, moons, **common)
    assert train_command("moons", {**values, "width2": 3}, moons, **common).endswith("--val-split 0.2 --widths 16,3")
