"""`derive bench` runs the harness with derive's peers and reports them beside NumPy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


def test_derive_bench_quick_run_reports_derive_and_agreeing_losses(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [sys.executable, "-c", "import cli; cli.main()", "bench", "--quick", "--configs", "tiny", "--peers",
           "derive,derive_step,numpy", "--dtypes", "float64", "--optimizers", "adam", "--no-gemm", "--out", str(out),
           # the suite's other workers keep the CPU busy: waiting for it to go idle (10 s a measurement,
           # then a re-run) made this test 90 s long, and it checks the report, not the timings
           "--wait-idle", "0", "--retries", "0"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    for peer in ("| derive |", "| derive_step |", "| numpy |"):
        line = next(row for row in text.splitlines() if row.startswith(peer))
        assert "error" not in line and "skipped" not in line, line
    assert "Peers agree on" in text


def test_derive_bench_multiclass_group_every_peer_computes_the_same_training(tmp_path):
    """64-128-10 softmax + cross-entropy: derive and every installed peer reach the same loss at the
    first step and after a block of steps (same forward pass, gradients and updates), in both dtypes.
    (derive_step runs the same kernels through `step`: the tiny test above covers it.)"""
    import json

    from benchmarks.report import LOSS_AFTER_RTOL, LOSS_RTOL

    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    peers = "derive,numpy,torch_eager,jax_step,jax_scan"
    cmd = [sys.executable, "-c", "import cli; cli.main()", "bench", "--configs", "multiclass", "--peers", peers,
           "--dtypes", "float32,float64", "--optimizers", "adam", "--steps", "3", "--repeats", "3", "--no-gemm",
           "--out", str(out), "--json", str(raw), "--wait-idle", "0", "--retries", "0"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(raw.read_text())["results"]
    assert {r["status"] for r in rows} <= {"ok", "skipped"}
    for dtype in ("float32", "float64"):
        ok = {r["peer"]: r for r in rows if r["dtype"] == dtype and r["status"] == "ok"}
        assert {"derive", "numpy"} <= set(ok), sorted(ok)
        ref = ok["numpy"]
        for key, rtol in (("first_loss", LOSS_RTOL[dtype]), ("loss_after_steps", LOSS_AFTER_RTOL[dtype])):
            for peer, r in ok.items():
                if r.get(key) is not None:
                    assert abs(r[key] - ref[key]) <= rtol * abs(ref[key]), (dtype, key, peer, r[key], ref[key])
    text = out.read_text()
    assert "### multiclass · adam · float64 — 64-128-10 relu/softmax CE b64" in text
    assert text.count("Peers agree on") == 2 and "disagrees" not in text


@pytest.mark.parametrize("args, message", [
    (["--K", "0"], "--K takes numbers of runs >= 1"),
    (["--K", "6x"], "--K takes numbers of runs >= 1"),
    (["--configs", "medium"], "unknown config(s) medium; choose from tiny, small"),
    (["--dtypes", "float16"], "unknown dtype(s) float16"),
    (["--optimizers", "rmsprop"], "unknown optimizer(s) rmsprop"),
    (["--peers", "derive,flax"], "unknown peer(s) flax"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_sweep_bench_bad_arguments_are_one_line_before_anything_runs(args, message):
    """`derive bench --sweep` with a bad argument: argparse's one error line, exit status 2, and no
    check or timing started (it used to time K = 0 runs and print each peer's failure)."""
    result = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bench", "--sweep", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"derive bench --sweep: error: {message}" in result.stderr and not result.stdout
