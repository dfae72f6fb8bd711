"""Building: deterministic output, --check catches drift, failures write nothing, the
committed generated/ folder is current, and the command line behaves as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import cli
from derive import build as build_mod

from .conftest import CATALOGUE

SMALL = """
[model.tiny]
inputs = 2
layers = [[3, "tanh"], [1, "sigmoid"]]
loss = "bce"
optimizer = { name = "sgd", lr = 0.2 }

[model.lin]
inputs = 1
layers = [[1, "identity"]]
loss = "mse"
"""


def run(*args, cwd=None):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text(SMALL)
    return path


def test_committed_generated_folder_is_current():
    result = run("build", "--spec", str(CATALOGUE), "--check")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_build_twice_is_byte_identical(spec_file, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert run("build", "--spec", str(spec_file), "--out", str(out1)).exit_code == 0
    assert run("build", "--spec", str(spec_file), "--out", str(out2)).exit_code == 0
    names = sorted(p.name for p in out1.iterdir())
    assert names == ["__init__.py", "_kernel_runtime.py", "lin.py", "tiny.py"]
    for name in names:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    again = run("build", "--spec", str(spec_file), "--out", str(out1))
    assert "0 written, 4 unchanged" in again.output


def test_check_catches_edits_and_missing_files(spec_file, tmp_path):
    out = tmp_path / "gen"
    run("build", "--spec", str(spec_file), "--out", str(out))
    assert run("build", "--spec", str(spec_file), "--out", str(out), "--check").exit_code == 0
    tiny = out / "tiny.py"
    tiny.write_text(tiny.read_text().replace("lr", "LR", 1))
    result = run("build", "--spec", str(spec_file), "--out", str(out), "--check")
    assert result.exit_code == 1
    assert "--- " in result.output and "+++ " in result.output and "tiny.py" in result.output
    tiny.unlink()
    result = run("build", "--spec", str(spec_file), "--out", str(out), "--check")
    assert result.exit_code == 1 and "(missing)" in result.output
    assert not tiny.exists()  # --check writes nothing


def test_only_builds_one_model(spec_file, tmp_path):
    out = tmp_path / "gen"
    result = run("build", "--spec", str(spec_file), "--out", str(out), "--only", "lin")
    assert result.exit_code == 0
    assert sorted(p.name for p in out.glob("*.py")) == ["__init__.py", "_kernel_runtime.py", "lin.py"]
    assert "MODELS = ('lin', 'tiny')" in (out / "__init__.py").read_text()


def test_failed_build_leaves_output_untouched(spec_file, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    run("build", "--spec", str(spec_file), "--out", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    spec_file.write_text(SMALL.replace("lr = 0.2", "lr = 0.3"))
    real = build_mod.render_module
    calls = []

    def flaky(d):
        calls.append(d.model.name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in the middle of a build")
        return real(d)

    monkeypatch.setattr(build_mod, "render_module", flaky)
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(spec_file), "--out", str(out)])
    assert result.exit_code == 1
    assert "code generation failed" in result.output and "simulated crash" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_stale_modules_are_removed_but_foreign_files_kept(spec_file, tmp_path):
    out = tmp_path / "gen"
    run("build", "--spec", str(spec_file), "--out", str(out))
    (out / "notes.py").write_text("# my own file\n")
    spec_file.write_text(SMALL.split("[model.lin]")[0])
    assert run("build", "--spec", str(spec_file), "--out", str(out), "--check").exit_code == 1
    result = run("build", "--spec", str(spec_file), "--out", str(out))
    assert "removed" in result.output and not (out / "lin.py").exists()
    assert (out / "notes.py").exists()


def test_unwritable_output_gives_clear_error_and_keeps_old_files(spec_file, tmp_path, monkeypatch):
    """A write that the OS refuses (read-only folder, full disk) is a BuildError naming the folder;
    the replaced file stays as it was and no temporary file is left behind. (Simulated at
    os.replace: the test user may be root, who can write to read-only folders.)"""
    import os

    out = tmp_path / "gen"
    run("build", "--spec", str(spec_file), "--out", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    spec_file.write_text(SMALL.replace("lr = 0.2", "lr = 0.3"))

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(spec_file), "--out", str(out)])
    assert result.exit_code == 1
    assert f"cannot write to {out}: Permission denied" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_list_and_show():
    result = run("list", "--spec", str(CATALOGUE))
    assert result.exit_code == 0
    assert "xor" in result.output and "2 -> 8 tanh -> 1 sigmoid; loss bce; sgd(lr=0.1)" in result.output
    shown = run("show", "xor", "--spec", str(CATALOGUE)).output
    for heading in ("Forward pass", "Loss", "Output-layer delta", "Backward recursion", "Parameter gradients",
                    "Update rule"):
        assert heading in shown
    assert "a₂ - y" in shown  # BCE∘sigmoid simplified jointly
    assert "1 - a₁" in shown  # tanh' in output form


@pytest.mark.parametrize("text,message", [
    ('[model.m]\ninputs = 2\nlayers = [[1, "sigmod"]]\nloss = "mse"\n',
     "my.toml:1: model 'm': layers[0]: unknown activation 'sigmod'; did you mean 'sigmoid'?"),
    ('[model.m]\ninputs = 2\nlayers = [[1, "sigmoid"]]\nloss = "bec"\n', "did you mean 'bce'?"),
    ('\n\n[model.m]\ninputs = 2\nlayers = [[1, "sigmoid"]\nloss = "mse"\n', "malformed TOML"),
    ('[model.m]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "bce"\n', "use a 'sigmoid' output layer"),
    ('[model."my-net"]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\n', "not a Python identifier"),
    ('[model.class]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\n', "is a Python keyword"),
    ('[model.m]\ninputs = 0\nlayers = [[1, "tanh"]]\nloss = "mse"\n', "inputs: must be at least 1"),
    ('[model.m]\ninputs = 2\nlayers = []\nloss = "mse"\n', "layers must be a non-empty list"),
    ('[model.m]\ninputs = 2\nlayers = [[1, "tanh", {slope = 1}]]\nloss = "mse"\n', "takes no parameter 'slope'"),
    ('[model.m]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\noptimizer = { name = "sgd", lr = -1 }\n',
     "lr: must lie in (0, inf)"),
    ('[model.m]\ninputs = 2\nlayers = [[1, "tanh"]]\nloss = "mse"\nlosss = 1\n', "unknown key 'losss'"),
])
def test_bad_specs_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "my.toml"
    path.write_text(text)
    out = tmp_path / "gen"
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(path), "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_malformed_toml_names_the_line(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[model.m]\ninputs = 2\nloss = mse\n')
    result = CliRunner().invoke(cli.main, ["build", "--spec", str(path)])
    assert result.exit_code == 1 and "line 3" in result.output


def test_unknown_model_and_missing_spec(tmp_path):
    result = CliRunner().invoke(cli.main, ["show", "xr", "--spec", str(CATALOGUE)])
    assert result.exit_code == 1 and "did you mean 'xor'?" in result.output
    result = CliRunner().invoke(cli.main, ["list", "--spec", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "spec file not found" in result.output


def test_python_api_builds_an_importable_package(tmp_path):
    """The Python API declares the same spec as TOML; its package imports and trains outside
    the repository (a fresh interpreter, the output folder on sys.path)."""
    import derive

    model = derive.Model("api_net", inputs=2, layers=[derive.Dense(4, "leaky_relu", slope=0.2),
                                                      derive.Dense(1, "sigmoid")],
                         loss="bce", optimizer={"name": "sgd", "lr": 0.5})
    toml = derive.parse_catalogue(
        '[model.api_net]\ninputs = 2\nlayers = [[4, "leaky_relu", {slope = 0.2}], [1, "sigmoid"]]\n'
        'loss = "bce"\noptimizer = { name = "sgd", lr = 0.5 }\n', "<python>")["api_net"]
    assert model == toml
    derive.build_models([model], tmp_path / "mypkg")
    code = ("import numpy as np, mypkg.api_net as m\n"
            "X = np.array([[0., 0], [0, 1], [1, 0], [1, 1]]); Y = np.array([[0.], [0], [0], [1]])\n"
            "p = m.init_params(seed=0); s = m.init_state(p)\n"
            "for _ in range(500): m.step(p, s, X, Y)\n"
            "assert m.loss(p, X, Y) < 0.2, m.loss(p, X, Y); print(m.SPEC['layers'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "[[4, 'leaky_relu', {'slope': 0.2}], [1, 'sigmoid']]" in out.stdout


def test_show_prints_the_optimizer_and_what_surrounds_it():
    shown = run("show", "xor_regularized", "--spec", str(CATALOGUE)).output
    assert "hyperparameters: lr = 0.1, momentum = 0.9, dampening = 0" in shown
    assert "g ← g + λ₁⋅sign(θ) + λ₂⋅θ" in shown  # the derived L1/L2 gradient
    assert "θ ← θ - ηₜ⋅b" in shown  # the update uses the scheduled rate
    assert "for t = 1" in shown and "b ← ⎨" in shown  # torch's first momentum buffer, as a case
    assert "clip_grad_norm_" in shown
    assert "symbols: η = lr, μ = momentum, τ = dampening" in shown
    adam = run("show", "xor_adam", "--spec", str(CATALOGUE)).output
    assert "m ← β₁⋅m + (1 - β₁)⋅g" in adam
    plain = run("show", "xor_regularized", "--spec", str(CATALOGUE), "--format", "text").output
    assert plain.isascii() and "g <- g + l1*sign(theta) + l2*theta" in plain and "theta <- theta - lr_t*b" in plain


def test_spec_records_optimizer_schedule_clipping_and_regularisation(generated):
    import generated.xor_regularized as reg

    assert reg.SPEC["optimizer"] == {"name": "momentum", "ema": False, "lr": 0.1, "momentum": 0.9, "dampening": 0.0}
    assert reg.SPEC["schedule"] == {"name": "step", "per": "epoch", "step_size": 1.0, "gamma": 0.5}
    assert reg.SPEC["clip"] == {"norm": 1.0, "value": 0.5}
    assert reg.SPEC["regularization"] == {"l1": 1e-4, "l2": 1e-3}
    assert reg.HYPER == {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "step_size": 1.0, "gamma": 0.5,
                         "l1": 1e-4, "l2": 1e-3, "clip_norm": 1.0, "clip_value": 0.5}
