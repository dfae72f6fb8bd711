"""`derive sweep` on the local engine: every run of a multi-run call equals the same run done
alone by `train` (bit for bit, float64); results do not depend on chunking or order; resume runs
only what is missing; an interruption loses nothing; a diverging run is a row; the command line,
its errors (one line, nothing written), the files, the pictures, Optuna's TPE."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import shlex
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from derive.data import load_dataset
from derive.runtime.widths import spec_widths
from derive.sweep import best_config, driver, results, sweep, worker
from derive.sweep.driver import make_folds, run_sweep
from derive.sweep.progress import SweepProgress
from derive.sweep.space import SweepError

VOLATILE = ["wall_time", "worker"]  # where and how fast a run ran: everything else must be equal


@pytest.fixture(scope="module")
def adam():
    return importlib.import_module("generated.xor_adam")


@pytest.fixture(scope="module")
def xor_data():
    return load_dataset("xor")


@pytest.fixture(scope="module")
def grid_sweep(adam, xor_data):
    """lr x width1 (the spec's 8 and 4) x 2 draws of beta2, 2 seeds, 2 folds: 32 runs of Adam."""
    return run_sweep(adam, data=xor_data, grid=["lr=0.01,0.05", "width1=8,4"], random=["beta2=uniform(0.9,0.999)"],
                     trials=2, seeds=2, folds=2, epochs=4, batch_size=16, seed=5)


def _plain(module, row, fold, val_every=0, dtype=np.float64):
    """The run of ``row`` done alone: init_params(seed), init_state, one train() call (or
    ``val_every`` epochs at a time), the losses of the final parameters."""
    Xtr, Ytr, Xva, Yva = fold
    widths = tuple(int(row[f"width{l}"]) for l in range(1, len(module.SPEC["layers"])))
    hyper = {k: float(row[k]) for k in module.HYPER}
    params = module.init_params(seed=int(row["seed"]), dtype=dtype,
                                init=None if row["init"] == "default" else row["init"], widths=widths)
    state = module.init_state(params, **hyper)
    losses, step = [], val_every or int(row["epochs"])
    for _ in range(0, int(row["epochs"]), step):
        res = module.train(params, state, Xtr, Ytr, epochs=step, batch_size=int(row["batch_size"]),
                           seed=int(row["seed"]), **hyper)
        losses += list(res["loss"])
    return (np.array(losses), float(module.loss(params, Xtr, Ytr, **hyper)),
            float(module.loss(params, Xva, Yva, **hyper)) if len(Xva) else math.nan)


def test_each_run_equals_train_alone_bit_for_bit(adam, xor_data, grid_sweep):
    df, rows = grid_sweep["table"], grid_sweep["rows"]
    assert len(df) == 32 and (df["status"] == "ok").all()
    assert sorted(df["width1"].unique()) == [4, 8] and df["beta2"].nunique() == 2 and df["lr"].nunique() == 2
    folds = make_folds(xor_data.X, xor_data.Y, 2, 0.0, 5, False, np.dtype(np.float64))
    for row, (_, r) in zip(rows, df.iterrows()):
        loss, train_loss, val_loss = _plain(adam, r, folds[int(r["fold"])])
        assert np.array_equal(np.array(row["loss_curve"]), loss)
        assert r["train_loss"] == train_loss and r["val_loss"] == val_loss
        assert r["epochs_run"] == 4 and r["steps"] == 4 * math.ceil(100 / 16)
    # the per-run seed is the sweep's (seed 5, replicate, fold), the same for every configuration
    assert df.groupby(["replicate", "fold"])["seed"].nunique().eq(1).all()
    assert df["seed"].nunique() == 4


def test_results_do_not_depend_on_chunking(adam, xor_data, grid_sweep, monkeypatch):
    kw = dict(data=xor_data, grid=["lr=0.01,0.05", "width1=8,4"], random=["beta2=uniform(0.9,0.999)"], trials=2,
              seeds=2, folds=2, epochs=4, batch_size=16, seed=5)
    want = grid_sweep["table"].drop(columns=VOLATILE)
    with monkeypatch.context() as m:
        m.setattr(driver, "MAX_CHUNK", 1)  # every run in a call of its own
        assert sweep(adam, **kw).drop(columns=VOLATILE).equals(want)
    # a train_many taking one value per hyperparameter for all its runs: one call per hyperparameter set
    calls = []
    real = adam.train_many
    def one_value_each(*args, **kwargs):
        assert not any(isinstance(kwargs[k], list) for k in adam.HYPER if k in kwargs)
        calls.append(len(args[0]))
        return real(*args, **kwargs)
    monkeypatch.setattr(adam, "train_many", one_value_each)
    monkeypatch.setattr(worker, "supports_per_run", lambda module, X, Y: False)
    assert sweep(adam, **kw).drop(columns=VOLATILE).equals(want)
    assert sum(calls) == 32 and len(calls) >= 8  # 2 lr x 2 beta2 x 2 folds at least


def test_worker_refuses_a_chunk_of_another_spec_naming_both_hashes(adam, xor_data, monkeypatch):
    """A worker whose module was built from another spec refuses the chunk (trains nothing), and
    the one-line error names its module's hash and the sweep's."""
    fold = make_folds(xor_data.X, xor_data.Y, 1, 0.2, 0, False, np.dtype(np.float64))[0]
    chunk = worker.Chunk("c1-0", 0, spec_widths(adam), 16, 1, [(0, 1, None, dict(adam.HYPER))])
    same = worker.ModelRef.of(adam)
    assert worker.run_chunk(same, fold, chunk)["rows"][0]["status"] == "ok"  # the right hash: the chunk runs
    other = importlib.import_module("generated.xor").SPEC_HASH  # the sweep's module: another spec
    assert other != adam.SPEC_HASH
    monkeypatch.setattr(adam, "train_many", lambda *a, **k: pytest.fail("a refused chunk was trained"))
    with pytest.raises(SweepError) as info:
        worker.run_chunk(dataclasses.replace(same, spec_hash=other), fold, chunk)
    text = str(info.value)
    assert f"generated.xor_adam was built from another spec (hash {adam.SPEC_HASH}, the sweep has {other})" in text
    assert "\n" not in text


def test_validation_curves_and_early_stopping(adam, xor_data):
    """val_every measures the validation loss between train_many calls, patience stops runs
    (status stopped, the best epoch's parameters): both equal the run done alone."""
    out = run_sweep(adam, data=xor_data, grid=["lr=0.3,0.001"], seeds=2, epochs=12, batch_size=32, val_every=3)
    folds = make_folds(xor_data.X, xor_data.Y, 1, 0.2, 0, False, np.dtype(np.float64))
    for row in out["rows"]:
        loss, train_loss, val_loss = _plain(adam, row, folds[0], val_every=3)
        assert np.array_equal(row["loss_curve"], loss) and row["val_loss"] == val_loss
        assert np.isfinite(row["val_curve"][2::3]).all() and np.isnan(np.delete(row["val_curve"], [2, 5, 8, 11])).all()
        assert row["val_curve"][-1] == val_loss
    stopped = run_sweep(adam, data=xor_data, grid=["lr=1.0,0.001"], seeds=2, epochs=40, patience=2)["rows"]
    by = {s["status"] for s in stopped}
    assert "stopped" in by, by
    for s in stopped:
        if s["status"] == "stopped":
            assert s["epochs_run"] < 40 and s["best_epoch"] == s["epochs_run"] - 2
            assert s["val_loss"] == min(v for v in s["val_curve"] if not math.isnan(v))


def test_float32_standardised_without_validation_rows(xor_data):
    xor = importlib.import_module("generated.xor")
    out = run_sweep(xor, data=xor_data, grid=["lr=0.01,0.1"], seeds=2, epochs=3, val_split=0.0, standardize=True,
                    dtype="float32")
    fold = make_folds(xor_data.X, xor_data.Y, 1, 0.0, 0, True, np.dtype(np.float32))[0]
    assert fold[0].dtype == np.float32 and len(fold[2]) == 0 and abs(fold[0].mean(axis=0)).max() < 1e-6
    for row in out["rows"]:
        loss, train_loss, _ = _plain(xor, row, fold, dtype=np.float32)
        assert np.array_equal(row["loss_curve"], loss) and row["train_loss"] == train_loss
        assert math.isnan(row["val_loss"]) and "train_accuracy" in row
    assert out["summary"][2].startswith("  training loss")


def test_diverging_run_is_a_row(tmp_path):
    linear = importlib.import_module("generated.linear")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    Y = X @ rng.normal(size=(3, 1))
    out = run_sweep(linear, X, Y, grid=["lr=0.01,1e5"], seeds=2, epochs=10, batch_size=8, out=tmp_path / "s")
    rows = {(r["lr"], r["replicate"]): r for r in out["rows"]}
    for rep in (0, 1):
        bad, good = rows[1e5, rep], rows[0.01, rep]
        assert bad["status"] == "diverged" and math.isnan(bad["val_loss"]) and bad["epochs_run"] < 10
        assert "NaN or infinite at epoch" in bad["message"]
        assert good["status"] == "ok" and math.isfinite(good["val_loss"])
    assert "2 ok, 2 diverged" in out["summary"][0] and "lr=0.01" in out["summary"][1]
    assert best_config(out["table"])["lr"] == 0.01
    table = results.read_table(tmp_path / "s")
    assert list(table["status"]) == ["ok", "ok", "diverged", "diverged"]


class _Recorder(SweepProgress):
    """Counts what the sweep reports; raises after ``fail_after`` chunks (a Ctrl-C stand-in)."""

    def __init__(self, fail_after=None, error=KeyboardInterrupt):
        self.updates, self.skipped, self.fail_after, self.error = [], 0, fail_after, error

    def skip(self, runs):
        self.skipped += runs

    def update(self, done, running, diverged, best):
        self.updates.append(done)
        if self.fail_after is not None and len(self.updates) >= self.fail_after:
            raise self.error("injected")


def _journal(folder):
    with open(folder / results.JOURNAL) as fh:
        return [json.loads(line) for line in fh]


def test_resume_runs_only_the_missing_runs(adam, xor_data, tmp_path):
    out = tmp_path / "s"
    kw = dict(data=xor_data, seeds=2, epochs=3, out=out)
    first = sweep(adam, grid=["lr=0.01,0.05"], **kw)
    assert len(_journal(out)) == 4
    with pytest.raises(SweepError, match="already holds a sweep .4 runs recorded.: pass --resume"):
        sweep(adam, grid=["lr=0.01,0.05"], **kw)
    rec = _Recorder()
    grown = sweep(adam, grid=["lr=0.01,0.05,0.2"], resume=True, progress=rec, **kw)
    assert rec.skipped == 4 and rec.updates[-1] == 6
    journal = _journal(out)
    assert len(journal) == 6 and len({r["run_id"] for r in journal}) == 6
    assert grown.iloc[:4].drop(columns=["number", "config"]).equals(first.drop(columns=["number", "config"]))
    again = _Recorder()
    sweep(adam, grid=["lr=0.01,0.05,0.2"], resume=True, progress=again, **kw)
    assert again.skipped == 6 and again.updates == [] and len(_journal(out)) == 6
    with pytest.raises(SweepError, match="another settings"):
        sweep(adam, grid=["lr=0.01"], resume=True, **{**kw, "seed": 1})


def test_resume_with_another_model_or_data_is_refused_naming_what_differs(adam, xor_data, tmp_path, monkeypatch):
    out = tmp_path / "s"
    kw = dict(grid=["lr=0.01,0.05"], epochs=1, out=out, resume=True)
    sweep(adam, xor_data.X, xor_data.Y, **{**kw, "resume": False})
    before = [(out / name).read_bytes() for name in (results.META, results.JOURNAL)]
    meta = json.loads(before[0])
    assert len(before[1].splitlines()) == 2

    def refused(pattern, model, X, Y):
        with pytest.raises(SweepError, match=pattern) as info:
            sweep(model, X, Y, **kw)
        assert [(out / name).read_bytes() for name in (results.META, results.JOURNAL)] == before  # nothing written
        return str(info.value)

    xor = importlib.import_module("generated.xor")  # another catalogue model (lr is its hyperparameter too)
    refused(r"holds a sweep with another model \(xor_adam there, xor now\)", xor, xor_data.X, xor_data.Y)
    with monkeypatch.context() as m:  # the same model's name, built from another spec
        m.setattr(adam, "SPEC_HASH", "0123456789abcdef")
        refused(rf"another spec hash \({meta['spec_hash']} there, 0123456789abcdef now\)", adam, xor_data.X,
                xor_data.Y)
    X = xor_data.X.copy()
    X[7, 0] += 0.5  # one value of one row
    text = refused(rf"another data \({meta['data']} there, ([0-9a-f]+) now\)", adam, X, xor_data.Y)
    assert results.fingerprint(X, xor_data.Y) in text and meta["data"] != results.fingerprint(X, xor_data.Y)
    refused(r"another data", adam, xor_data.X[:-1], xor_data.Y[:-1])  # a row fewer
    rec = _Recorder()  # the same model and data still resume
    sweep(adam, xor_data.X, xor_data.Y, progress=rec, **kw)
    assert rec.skipped == 2 and rec.updates == []


def test_interrupted_sweep_loses_nothing_and_resumes(adam, xor_data, tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "MAX_CHUNK", 3)
    kw = dict(data=xor_data, grid=["lr=0.01,0.05,0.2"], seeds=3, epochs=3, out=tmp_path / "s")
    rec = _Recorder(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        sweep(adam, progress=rec, **kw)
    journal = _journal(tmp_path / "s")
    assert len(journal) == rec.updates[-1] and 0 < len(journal) < 9
    assert len(results.read_table(tmp_path / "s")) == len(journal)  # the table of what was done
    # a crash in the middle of writing a line: that run is done again, nothing else
    with open(tmp_path / "s" / results.JOURNAL, "ab") as fh:
        fh.write(b'{"run_id": "abc", "number": 1')
    rec = _Recorder()
    result = run_sweep(adam, resume=True, progress=rec, **kw)
    done = result["table"]
    assert rec.skipped == len(journal) and len(done) == 9
    assert "the journal had 1 line cut short by a crash: skipped, and their runs done again" in result["summary"]
    fresh = sweep(adam, **{**kw, "out": tmp_path / "fresh"})
    assert done.drop(columns=VOLATILE).equals(fresh.drop(columns=VOLATILE))


def test_files_csv_without_pyarrow_and_list_without_pandas(adam, xor_data, tmp_path, monkeypatch):
    out = run_sweep(adam, data=xor_data, grid=["lr=0.01,0.05"], epochs=3, out=tmp_path / "a", plots=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    table = "results.parquet" if results.has_pyarrow() else "results.csv"
    assert names == sorted(["best_curves.png", "curves.npz", "loss_vs_params.png", table, "runs.jsonl", "sweep.json"])
    curves = np.load(tmp_path / "a" / "curves.npz")
    assert curves["loss"].shape == (2, 3) and list(curves["run_id"]) == [r["run_id"] for r in out["rows"]]
    monkeypatch.setattr(results, "has_pyarrow", lambda: False)
    sweep(adam, data=xor_data, grid=["lr=0.01,0.05"], epochs=3, out=tmp_path / "b")
    assert (tmp_path / "b" / "results.csv").exists() and not (tmp_path / "b" / "results.parquet").exists()
    csv_table = results.read_table(tmp_path / "b")
    assert np.array_equal(csv_table["val_loss"].to_numpy(), out["table"]["val_loss"].to_numpy())
    monkeypatch.setattr(results, "has_pandas", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = sweep(adam, data=xor_data, grid=["lr=0.01,0.05"], epochs=3)
    assert isinstance(rows, list) and rows[0]["val_loss"] == out["rows"][0]["val_loss"]
    assert any("pandas is not installed" in str(w.message) for w in caught)


def test_without_pandas_one_sweep_warns_once(adam, xor_data, monkeypatch):
    monkeypatch.setattr(results, "has_pandas", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning issued is recorded, repeats too
        rows = sweep(adam, data=xor_data, grid=["lr=0.01,0.05"], seeds=2, epochs=1)
    assert isinstance(rows, list) and len(rows) == 4 and all(isinstance(r, dict) for r in rows)
    about = [w for w in caught if "pandas" in str(w.message)]
    assert len(about) == 1, [str(w.message) for w in about]
    assert "pip install 'derive[sweep]'" in str(about[0].message)


def test_tpe_is_reproducible_and_resumes(adam, xor_data, tmp_path):
    pytest.importorskip("optuna")
    kw = dict(data=xor_data, random=["lr=loguniform(0.001,0.5)", "beta1=uniform(0.5,0.95)"], search="tpe",
              trials=10, epochs=3)
    a = sweep(adam, **kw)
    b = sweep(adam, **kw, out=tmp_path / "t")
    assert len(a) == 10 and a.drop(columns=VOLATILE).equals(b.drop(columns=VOLATILE))
    rec = _Recorder()
    c = sweep(adam, **kw, out=tmp_path / "t", resume=True, progress=rec)
    assert rec.skipped == 10 and rec.updates == [] and c.drop(columns=VOLATILE).equals(a.drop(columns=VOLATILE))


def test_missing_optuna_is_one_line(adam, xor_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SweepError, match=r"^search 'tpe' needs Optuna, which is not installed: pip install "
                                         r"'derive\[optuna\]'"):
        sweep(adam, data=xor_data, random=["lr=loguniform(0.001,0.5)"], search="tpe", epochs=1)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run `derive` in an empty folder (the bundled models; no catalogue to rebuild)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_sweep_end_to_end(cli, tmp_path):
    res = cli("sweep", "xor_adam", "--data", "xor", "--grid", "lr=0.01,0.1", "--grid", "batch_size=16,64",
              "--seeds", "2", "--epochs", "5", "--out", "out", "--beta1", "0.8")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "space      lr=0.01,0.1 batch_size=16,64 beta1=0.8" in out
    assert "running    8 runs: 4 configurations x 2 seeds x 1 fold, 5 epochs, on this process" in out
    assert "8 runs of 4 configurations: 8 ok, 0 diverged, 0 stopped early" in out
    assert "best configuration (config" in out and "validation loss" in out
    line = next(l for l in out.splitlines() if l.startswith("train it"))
    args = shlex.split(line.split(maxsplit=2)[2])[1:]  # after "derive"
    assert args[:2] == ["train", "xor_adam"] and "--beta1=0.8" in args and any(a.startswith("--lr=") for a in args)
    table = "results.parquet" if results.has_pyarrow() else "results.csv"
    for name in (table, "curves.npz", "loss_vs_params.png", "heatmap.png", "best_curves.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    trained = cli(*args)  # derive train takes the configuration as it is printed
    assert trained.exit_code == 0, trained.output
    assert "beta1=0.8" in trained.output


def test_cli_ctrl_c_keeps_the_finished_runs(cli, tmp_path, monkeypatch):
    from derive.sweep import progress

    def interrupt(self, done, running, diverged, best):
        if done:  # after the first chunk
            raise KeyboardInterrupt

    grid = "lr=0.01,0.02,0.05,0.1,0.2,0.5"
    with monkeypatch.context() as m:
        m.setattr(progress.TerminalSweepProgress, "update", interrupt)
        res = cli("sweep", "xor", "--grid", grid, "--epochs", "2", "--out", "out")
    assert res.exit_code == 130
    done = int(re.search(r"interrupted: (\d+) finished runs are recorded in out", res.output).group(1))
    assert 0 < done < 6 and "--resume" in res.output and len(_journal(tmp_path / "out")) == done
    res = cli("sweep", "xor", "--grid", grid, "--epochs", "2", "--out", "out", "--resume")
    assert res.exit_code == 0 and f"resuming   {done} of 6 runs are in the journal already" in res.output
    assert len(_journal(tmp_path / "out")) == 6


@pytest.mark.parametrize("args, message", [
    (["--grid", "lrr=0.1"], "error: --grid lrr=0.1: unknown hyperparameter 'lrr' for model 'xor'; did you mean 'lr'?"),
    (["--grid", "lr="], "error: --grid lr=: the grid of lr is empty"),
    (["--random", "lr=loguniform(0.1)"], "error: --random lr=loguniform(0.1): loguniform(a, b) takes two numbers"),
    (["--random", "lr=logunifrom(0.1, 1)"], "error: --random lr=logunifrom(0.1, 1): unknown distribution"),
    (["--grid", "lr=0.1", "--trials", "5"], "error: trials=5 draws the random dimensions, but the space has none"),
    (["--grid", "lr=0.1", "--momentum", "0.9"], "error: no option --momentum"),
    (["--grid", "lr=0.1", "--space", "missing.toml"], "error: missing.toml: space file not found"),
])
def test_cli_bad_input_one_line_nothing_written(cli, tmp_path, args, message):
    res = CliRunner().invoke(main, ["sweep", "xor", "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 1
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert not (tmp_path / "out").exists()


def test_cli_non_empty_folder_without_a_sweep_is_refused(cli, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine\n")
    res = cli("sweep", "xor", "--grid", "lr=0.1", "--epochs", "1", "--out", "out")
    assert res.exit_code == 1
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert lines == ["error: out is not empty and holds no sweep (sweep.json is missing): choose an empty or new "
                     "folder for --out"], res.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine\n"
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert cli("sweep", "xor", "--grid", "lr=0.1", "--epochs", "1", "--out", "empty").exit_code == 0
    assert (tmp_path / "empty" / results.META).exists()


def test_cli_bench_sweep_runs_the_sweep_benchmark(cli, monkeypatch):
    """`derive bench --sweep ...` calls benchmarks.sweep_bench.main with the other arguments (not
    the harness), and exits with its status; an option of the harness only is refused there."""
    from benchmarks import harness, sweep_bench

    calls = []

    def fake_sweep_main(argv=None, prog="python -m benchmarks.sweep_bench"):
        calls.append((argv, prog))
        return 3

    monkeypatch.setattr(harness, "main", lambda *a, **k: pytest.fail("derive bench --sweep ran the harness"))
    with monkeypatch.context() as m:
        m.setattr(sweep_bench, "main", fake_sweep_main)
        res = cli("bench", "--quick", "--sweep", "--K", "4,8", "--configs", "tiny", "--no-check")
        assert res.exit_code == 3, res.output
        assert calls == [(["--quick", "--K", "4,8", "--configs", "tiny", "--no-check"], "derive bench --sweep")]
        assert cli("bench", "--sweep", "--help-bench").exit_code == 3
        assert calls[-1] == (["--help"], "derive bench --sweep")
    # the real sweep benchmark's parser: --no-gemm is the harness's option, refused before anything runs
    res = cli("bench", "--sweep", "--no-gemm")
    assert res.exit_code == 2
    assert "derive bench --sweep: error: unrecognized arguments: --no-gemm" in res.output, res.output
