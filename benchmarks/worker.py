"""Runs ONE measurement in this (fresh) process and prints its result as JSON.

Usage: ``python -m benchmarks.worker '<job json>'`` where the job is::

    {"peer": "numpy", "module": "benchmarks.peers.numpy_peer",
     "config": {...Config.to_json()...} | null, "optimizer": "sgd" | "adam" | null,
     "dtype": "float32" | "float64", "steps": 100, "repeats": 21, "seed": 0}

The last line of stdout is ``RESULT_MARKER`` followed by the result JSON: the peer's dict plus
``status`` ("ok" | "skipped" | "error"), ``reason`` (skipped) or ``error`` (one line) and
``traceback`` (error), and ``wall_s`` (seconds in this process, imports included).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback

RESULT_MARKER = "@@BENCH-RESULT@@ "


def run_job(job: dict) -> dict:
    from benchmarks.configs import Config

    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(job["module"])
        reason = mod.available()
        if reason is not None:
            return {"status": "skipped", "reason": str(reason), "wall_s": time.perf_counter() - t0}
        config = Config.from_json(job["config"]) if job.get("config") else None
        res = mod.measure(
            config,
            job.get("optimizer"),
            job["dtype"],
            steps=int(job["steps"]),
            repeats=int(job["repeats"]),
            seed=int(job.get("seed", 0)),
        )
        res = dict(res)
        missing = [k for k in ("median_s", "p10_s", "p90_s") if k not in res]
        if missing:
            raise ValueError(f"peer {job['peer']!r} returned no {', '.join(missing)}")
        res["status"] = "ok"
    except Exception as exc:  # a crashing peer is a result, not a crash of the run
        msg = str(exc).strip().splitlines()
        res = {
            "status": "error",
            "error": f"{type(exc).__name__}: {msg[0] if msg else ''}".strip(),
            "traceback": traceback.format_exc(),
        }
    res["wall_s"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(argv[0] if argv else sys.stdin.read())
    res = run_job(job)
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
