"""Plots of a training run (derive.runtime.plots) and optimizer paths on a surface
(derive.runtime.surface, ``derive plot-surface``): real PNGs, not blank, clear errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from click.testing import CliRunner  # noqa: E402

from cli import main  # noqa: E402
from derive.errors import DeriveError  # noqa: E402
from derive.runtime import surface  # noqa: E402
from derive.runtime.plots import PlotError, plot_decision_boundary, plot_grad_norms, plot_training  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROSENBROCK = surface.PRESETS["rosenbrock"].expr


def assert_png(path, min_colours: int = 60, min_std: float = 0.05):
    """A real PNG of reasonable size with visible content; returns the (H, W, C) pixels."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert 10_000 < len(data) < 5_000_000, f"{path}: {len(data)} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    h, w = pixels.shape[:2]
    assert 300 <= h <= 2000 and 400 <= w <= 4000, pixels.shape
    rgb = np.round(pixels[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    assert rgb.std() / 255 > min_std, "the image is (nearly) blank"
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]).size
    assert colours > min_colours, f"only {colours} distinct colours"
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"
    return pixels


def _history(R=3, E=40, L=3, seed=0):
    rng = np.random.default_rng(seed)
    ep = np.arange(1, E + 1)
    loss = np.stack([0.7 * np.exp(-ep / (8 + 4 * r)) + 0.01 * (r + 1) + 0.002 * rng.random(E) for r in range(R)])
    val = loss * 1.1 + 0.005
    grads = np.stack([np.stack([np.exp(-ep / 10) * 10.0**-l + 1e-6 for l in range(L)], axis=1) for _ in range(R)])
    return loss, val, grads


def _xor_data(n=60, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    Y = (X[:, 0] * X[:, 1] > 0).astype(float)[:, None]
    return X, Y


def _xor_predict(P):
    assert P.dtype == np.float64 and P.ndim == 2 and P.shape[1] == 2
    return 1.0 / (1.0 + np.exp(-4.0 * P[:, :1] * P[:, 1:]))


# ------------------------------------------------------------------------------------------
# plot_training


def test_training_all_panels(tmp_path):
    loss, val, grads = _history()
    loss[2, 25:] = np.nan  # a restart that stopped early
    val[2, 25:] = np.nan
    grads[1, 3, 0] = 0.0  # zero and NaN on a log scale
    grads[1, 4, 2] = np.nan
    X, Y = _xor_data()
    out = plot_training(tmp_path / "run.png", loss=loss, val_loss=val, grad_norms=grads, best=1,
                        layer_names=["hidden", "hidden 2", "output"], predict=_xor_predict, X=X, Y=Y,
                        title="xor, 3 restarts")
    assert out == tmp_path / "run.png"
    full = assert_png(out)
    two = assert_png(plot_training(tmp_path / "two.png", loss=loss, val_loss=val, grad_norms=grads, best=1))
    assert full.shape[1] > two.shape[1] * 1.3  # the boundary panel adds width


def test_training_loss_only_one_run(tmp_path):
    pixels = assert_png(plot_training(tmp_path / "loss.png", loss=np.linspace(2.0, 1.0, 10)), min_colours=20)
    assert pixels.shape[1] < 900  # one panel


def test_training_boundary_left_out_for_three_inputs(tmp_path):
    loss, val, grads = _history(R=1)
    called = []
    X = np.random.default_rng(0).normal(size=(20, 3))

    def predict(P):
        called.append(P)
        return np.zeros((len(P), 1))

    wide = plot_training(tmp_path / "a.png", loss=loss, grad_norms=grads[0], predict=predict, X=X, Y=np.zeros(20))
    plain = plot_training(tmp_path / "b.png", loss=loss, grad_norms=grads)
    assert not called
    assert assert_png(wide).shape == assert_png(plain).shape


def test_training_survives_nan_best_run_and_overwrites_atomically(tmp_path):
    loss = np.full((2, 5), np.nan)
    loss[1] = [1.0, 0.5, 0.25, np.inf, np.nan]
    grads = np.zeros((2, 5, 2))  # nothing positive to show on a log scale
    target = tmp_path / "nan.png"
    target.write_bytes(b"old")
    plot_training(target, loss=loss, val_loss=np.full((2, 5), np.nan), grad_norms=grads, best=0)  # no validation
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_written_file_has_an_ordinary_mode(tmp_path):
    out = plot_training(tmp_path / "mode.png", loss=[1.0, 0.5])
    (tmp_path / "plain").write_bytes(b"")
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777  # not mkstemp's 0600
    out.chmod(0o640)
    plot_training(out, loss=[1.0, 0.25])  # replacing a file keeps its mode
    assert out.stat().st_mode & 0o777 == 0o640


def test_smaller_helpers(tmp_path):
    _, _, grads = _history()
    assert_png(plot_grad_norms(tmp_path / "g.png", grads, best=2))
    X, Y = _xor_data()
    assert_png(plot_decision_boundary(tmp_path / "d.png", lambda P: _xor_predict(P)[:, 0], X, Y[:, 0]))


def _bad_training_inputs():
    loss, val, grads = _history(R=2, E=6, L=2)
    X, Y = _xor_data(10)
    ok = {"loss": loss}
    return [
        ({"loss": np.zeros((2, 3, 4))}, "loss must be 1-D or 2-D"),
        ({"loss": [["a", "b"]]}, "loss must be an array of numbers"),
        ({"loss": np.zeros((0,))}, "loss is empty"),
        ({**ok, "val_loss": val[:, :3]}, "val_loss has shape (2, 3) but loss has (2, 6)"),
        ({**ok, "best": 2}, "best=2 is out of range"),
        ({**ok, "best": True}, "best must be an integer"),
        ({**ok, "grad_norms": grads[:, :4]}, "grad_norms has shape (2, 4, 2)"),
        ({**ok, "grad_norms": grads[0]}, "but loss has 2 restarts"),
        ({**ok, "grad_norms": grads, "layer_names": ["a"]}, "layer_names has 1 name(s) but grad_norms has 2"),
        ({**ok, "layer_names": ["a", "b"]}, "layer_names was given without grad_norms"),
        ({**ok, "predict": _xor_predict}, "predict was given without X"),
        ({**ok, "predict": "model", "X": X}, "predict must be a function"),
        ({**ok, "predict": _xor_predict, "X": X, "Y": Y[:5]}, "X has 10 rows but Y has 5"),
        ({**ok, "predict": _xor_predict, "X": X, "Y": np.zeros((10, 2))}, "Y must be (N,) or (N, 1)"),
        ({**ok, "predict": _xor_predict, "X": np.where(np.eye(10, 2) > 0, np.nan, X), "Y": Y}, "X contains NaN"),
        ({**ok, "predict": lambda P: P, "X": X, "Y": Y}, "predict returned shape"),
        ({**ok, "predict": lambda P: 1 / 0, "X": X, "Y": Y}, "predict failed on a"),
    ]


@pytest.mark.parametrize(("kwargs", "message"), _bad_training_inputs())
def test_training_bad_inputs(tmp_path, kwargs, message):
    with pytest.raises(DeriveError) as info:
        plot_training(tmp_path / "bad.png", **kwargs)
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


def test_bad_output_paths(tmp_path):
    with pytest.raises(PlotError, match=r"must end in \.png"):
        plot_training(tmp_path / "run.jpg", loss=[1.0, 0.5])
    with pytest.raises(PlotError, match="is a folder"):
        plot_training(tmp_path, loss=[1.0, 0.5])


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"pip install 'derive\[plot\]'"):
        plot_training(tmp_path / "run.png", loss=[1.0, 0.5])


# ------------------------------------------------------------------------------------------
# surface: parsing and settings (no compilation)


def test_parse_helpers():
    assert surface.parse_point("-1.2, 1") == (-1.2, 1.0)
    assert surface.parse_box("-2,2,-1,3") == (-2.0, 2.0, -1.0, 3.0)
    assert surface.parse_names("sgd, adam,") == ("sgd", "adam")
    assert surface.parse_lr("0.01") == 0.01
    assert surface.parse_lr("sgd=0.001, adam=0.05") == {"sgd": 0.001, "adam": 0.05}
    for bad, fn in [("1", surface.parse_point), ("a,b", surface.parse_point), ("inf,0", surface.parse_point),
                    ("1,2,3", surface.parse_box), ("1,0,0,1", surface.parse_box), ("", surface.parse_names),
                    ("fast", surface.parse_lr), ("sgd=", surface.parse_lr), ("=1", surface.parse_lr),
                    ("sgd=1,sgd=2", surface.parse_lr)]:
        with pytest.raises(DeriveError):
            fn(bad)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "c"))
    assert surface.cache_dir() == tmp_path / "c" / "objectives"
    assert surface.cache_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("DERIVE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert surface.cache_dir() == tmp_path / "xdg" / "derive" / "objectives"


def test_presets_are_consistent():
    assert {"rosenbrock", "saddle", "ravine"} <= set(surface.PRESETS)
    for name, p in surface.PRESETS.items():
        assert p.box[0] <= p.start[0] <= p.box[1] and p.box[2] <= p.start[1] <= p.box[3], name
        assert all(lr > 0 for lr in p.lr.values()) and set(surface.DEFAULT_OPTIMIZERS) <= set(p.lr), name
    with pytest.raises(DeriveError, match="unknown preset 'rosenbrok'; did you mean 'rosenbrock'"):
        surface.preset("rosenbrok")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"expr": "x**2 +* y"}, "expr: syntax error"),
    ({"expr": "x + z"}, "unknown name 'z'"),
    ({"variables": ("x", "y", "z")}, "exactly 2 variables"),
    ({"variables": ("x", "x")}, "must differ"),
    ({"variables": ("x", "t"), "expr": "x + t"}, "reserved"),
    ({"optimizers": ("sgd", "adamm")}, "did you mean 'adam'"),
    ({"optimizers": ()}, "optimizers is empty"),
    ({"optimizers": ("sgd", "sgd")}, "twice"),
    ({"start": (1.0, math.nan)}, "start must be finite"),
    ({"start": "ab"}, "start must be two numbers"),
    ({"steps": 0}, "steps must be an integer"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"lr": -1.0}, "positive finite"),
    ({"lr": {"nadam": 0.1}}, "not among the optimizers"),
    ({"box": (-1, 1, 2, 3)}, "lies outside the box"),
    ({"box": (1, -1, 0, 1)}, "xmin < xmax"),
])
def test_surface_bad_arguments(tmp_path, kwargs, message):
    args = {"expr": ROSENBROCK, "optimizers": ("sgd",), "start": (-1.2, 1.0), "steps": 10, "cache": tmp_path,
            **kwargs}
    expr = args.pop("expr")
    with pytest.raises(DeriveError) as info:
        surface.compare(expr, **args)
    assert message in str(info.value)
    assert not list(tmp_path.glob("*.py")), "nothing is generated for bad arguments"


# ------------------------------------------------------------------------------------------
# surface: generated objectives (Numba compiles each module once into a shared cache folder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("derive_cache")


def test_objective_modules_cached(cache, monkeypatch):
    a = surface.load_objective(ROSENBROCK, ("x", "y"), "sgd", cache / "objectives")
    assert surface.load_objective(ROSENBROCK, ("x", "y"), "sgd", cache / "objectives") is a
    files = {p.name for p in (cache / "objectives").glob("*.py")} - {"_kernel_runtime.py"}  # (written beside)
    assert len(files) == 1 and next(iter(files)).startswith("sgd_")
    path = cache / "objectives" / next(iter(files))
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(surface, "_LOADED", {})  # a new process: same text, so the file (and Numba's cache) stay
    surface.load_objective(ROSENBROCK, ("x", "y"), "sgd", cache / "objectives")
    assert path.stat().st_mtime_ns == stamp
    # distinct names per optimizer and per expression
    names = {surface._objective_name(e, ("x", "y"), o) for e in (ROSENBROCK, "x**2 + y**2") for o in ("sgd", "adam")}
    assert len(names) == 4


def test_plot_surface_rosenbrock(cache, tmp_path):
    c = surface.compare(ROSENBROCK, optimizers=("sgd", "adam"), start=(-1.2, 1.0), steps=300,
                        lr={"sgd": 1e-3}, box=(-2, 2, -1, 3), cache=cache / "objectives")
    assert [r.optimizer for r in c.runs] == ["sgd", "adam"]
    assert [r.lr for r in c.runs] == [1e-3, surface.DEFAULT_LR["adam"]]
    for run in c.runs:
        assert run.diverged_at is None and run.path.shape == (301, 2)
        np.testing.assert_allclose(run.path[0], (-1.2, 1.0))
        assert run.final_value < 4.0  # f(-1.2, 1) = 24.2
    out = surface.draw_comparison(c, tmp_path / "rosenbrock.png")
    assert_png(out, min_colours=200)


def test_plot_surface_cuts_diverging_paths(cache, tmp_path):
    out = surface.plot_preset("rosenbrock", tmp_path / "div.png", optimizers=("sgd", "adam"), steps=200,
                              lr={"sgd": 0.01}, cache=cache / "objectives")
    assert_png(out, min_colours=200)
    c = surface.compare_preset("rosenbrock", optimizers=("sgd",), steps=200, lr=0.01, cache=cache / "objectives")
    (run,) = c.runs
    assert run.diverged_at is not None and run.diverged_at < 20
    assert "diverged at step" in run.describe()
    assert np.isfinite(run.path).all() and len(run.path) == run.diverged_at


def test_plot_surface_auto_box(cache, tmp_path):
    out = surface.plot_surface(tmp_path / "auto.png", ROSENBROCK, optimizers=("adam",), start=(0.0, 0.0), steps=100,
                               lr=0.05, cache=cache / "objectives")
    assert_png(out, min_colours=200)


def test_presets_tell_their_story(cache):
    saddle = surface.compare_preset("saddle", optimizers=("sgd", "adam"), cache=cache / "objectives")
    sgd, adam = saddle.runs
    assert np.hypot(*sgd.final) < 0.1 and abs(sgd.final_value) < 0.01  # stalled at the saddle
    assert abs(abs(adam.final[1]) - math.sqrt(2)) < 0.01 and adam.final_value < -0.99  # escaped to a minimum
    (zigzag,) = surface.compare_preset("ravine", optimizers=("sgd",), steps=10, cache=cache / "objectives").runs
    assert (np.sign(zigzag.path[1:, 1]) != np.sign(zigzag.path[:-1, 1])).all()  # across the valley every step
    assert zigzag.path[-1, 0] < -7  # and hardly along it


# ------------------------------------------------------------------------------------------
# derive plot-surface


def test_cli_plot_surface(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(cache))
    out = tmp_path / "surface.png"
    result = CliRunner().invoke(main, ["plot-surface", "rosenbrock", "--optimizers", "sgd,adam", "--steps", "200",
                                       "--start=-1,1.5", "--lr", "adam=0.05", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"wrote {out}"
    assert lines[1].split()[:3] == ["sgd", "lr", "0.001"] and "after 200 steps" in lines[1]
    assert lines[2].split()[:3] == ["adam", "lr", "0.05"] and "f = " in lines[2]
    assert_png(out, min_colours=200)


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "error: unknown preset 'nope'"),
    (["--expr", "x**2 +* y"], "error: expr: syntax error"),
    (["--optimizers", "sgd,adamm"], "error: unknown optimizer 'adamm'"),
    (["--start", "1"], "error: --start must be two finite numbers"),
    (["--lr", "adam=x"], "error: --lr: 'adam=x' is not NAME=VALUE"),
    (["--box", "0,1"], "error: --box must be four numbers"),
])
def test_cli_plot_surface_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["plot-surface", *args, "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_surface_usage_errors(tmp_path):
    runner = CliRunner()
    for args in (["saddle", "--expr", "x**2"], ["--steps", "0"], []):
        result = runner.invoke(main, ["plot-surface", *args] + (["-o", str(tmp_path / "x.png")] if args else []))
        assert result.exit_code == 2, (args, result.output)
