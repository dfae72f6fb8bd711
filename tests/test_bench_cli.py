"""`derive bench` runs the harness with derive's peers and reports them beside NumPy."""

from __future__ import annotations

import subprocess
import sys

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
