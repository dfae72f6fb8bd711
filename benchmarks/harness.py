"""Runs the benchmark: every (peer, config, optimizer, dtype) group in its own fresh subprocess.

Thread pools of torch (OpenMP), XLA and OpenBLAS keep spinning after a call and fight over the
cores when mixed in one process, so each measurement runs ``python -m benchmarks.worker`` alone,
one after another. The GEMM rate of each dtype is measured first, then, group by group, every
peer in turn (so a group's peers are measured close together in time).

A peer whose module is missing or whose ``available()`` gives a reason is *skipped* (once
noted, it is not started again); a peer that raises or dies is an *error* with its last line;
the run goes on either way. This process never imports torch or jax.

Entry point: :func:`main` (``python -m benchmarks``; ``derive bench`` calls it too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import report
from benchmarks.configs import CONFIGS, DTYPES, OPTIMIZERS, Config, flops_per_step, select
from benchmarks.peers import BOUNDS, all_peers, module_exists
from benchmarks.report import BUSY_CORES
from benchmarks.worker import RESULT_MARKER

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
QUICK_CONFIGS = ("tiny", "small")
QUICK_DTYPES = ("float64",)
GEMM_STEPS, GEMM_REPEATS = 1, 7


def _split(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None stays None."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time one training step (forward + backward + update) of small dense "
        "networks in several libraries, side by side, each in its own subprocess.",
    )
    p.add_argument("--quick", action="store_true", help="fast smoke run: tiny+small, float64, fewer steps and repeats")
    p.add_argument(
        "--configs", action="append", metavar="NAMES", help=f"comma-separated subset of: {', '.join(CONFIGS)}"
    )
    p.add_argument(
        "--peers",
        action="append",
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(all_peers())} (gemm is always run unless --no-gemm)",
    )
    p.add_argument("--dtypes", action="append", metavar="NAMES", help=f"comma-separated subset of: {', '.join(DTYPES)}")
    p.add_argument(
        "--optimizers", action="append", metavar="NAMES", help=f"comma-separated subset of: {', '.join(OPTIMIZERS)}"
    )
    p.add_argument("--steps", type=int, help="training steps per timed repeat (overrides each config's)")
    p.add_argument("--repeats", type=int, help="timed repeats (overrides each config's)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial parameters and batches")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per measurement")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=10.0,
        metavar="S",
        help="before each measurement wait up to S s for other processes to leave the CPU (default %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-run a measurement disturbed by other processes up to N times (default %(default)s)",
    )
    p.add_argument(
        "--wait-budget",
        type=float,
        default=120.0,
        metavar="S",
        help="total seconds the whole run may spend waiting and re-running (default %(default)s)",
    )
    p.add_argument("--no-gemm", action="store_true", help="do not measure the GEMM rate")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default: benchmarks/RESULTS.md)")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    p.add_argument("--list", action="store_true", help="list configs and peers and exit")
    p.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-write the report from a --json file of an earlier run"
    )
    return p


# --------------------------------------------------------------------------- planning


def plan(args: argparse.Namespace) -> list[dict]:
    """The jobs to run, in order (GEMM first). Raises ValueError on unknown names."""
    peers = all_peers()
    configs = select(_split(args.configs) or (list(QUICK_CONFIGS) if args.quick else None), CONFIGS, "config")
    dtypes = select(_split(args.dtypes) or (list(QUICK_DTYPES) if args.quick else None), DTYPES, "dtype")
    optimizers = select(_split(args.optimizers), OPTIMIZERS, "optimizer")
    chosen = select(_split(args.peers), peers, "peer")
    step_peers = [p for p in chosen if p != "gemm"]

    jobs: list[dict] = []
    if not args.no_gemm:
        for dt in dtypes:
            jobs.append(
                dict(
                    peer="gemm",
                    module=peers["gemm"],
                    config=None,
                    optimizer=None,
                    dtype=dt,
                    steps=GEMM_STEPS,
                    repeats=3 if args.quick else GEMM_REPEATS,
                    seed=args.seed,
                )
            )
    for cname in configs:
        cfg = CONFIGS[cname]
        steps = args.steps or (max(1, cfg.steps // 4) if args.quick else cfg.steps)
        repeats = args.repeats or (max(3, cfg.repeats // 3) if args.quick else cfg.repeats)
        for opt in optimizers:
            for dt in dtypes:
                for peer in step_peers:
                    if peer in BOUNDS and flops_per_step(cfg) < BOUNDS[peer]:
                        continue
                    jobs.append(
                        dict(
                            peer=peer,
                            module=peers[peer],
                            config=cfg.to_json(),
                            optimizer=opt,
                            dtype=dt,
                            steps=steps,
                            repeats=repeats,
                            seed=args.seed,
                        )
                    )
    return jobs


# --------------------------------------------------------------------------- running


def run_worker(job: dict, timeout: float) -> dict:
    """Run one job in a fresh ``python -m benchmarks.worker`` and return its result dict."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(job)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    last = tail[-1].strip() if tail else "no output"
    return {
        "status": "error",
        "error": f"worker exited with code {proc.returncode}: {last}",
        "traceback": "\n".join(tail[-30:]),
    }


def _label(job: dict) -> str:
    if job["config"] is None:
        return f"{job['peer']} {job['dtype']}"
    return f"{job['config']['name']} {job['optimizer']} {job['dtype']} {job['peer']}"


def _progress(res: dict) -> str:
    if res["status"] == "skipped":
        return f"skipped ({res['reason']})"
    if res["status"] == "error":
        return f"ERROR {res['error']}"
    load = res.get("foreign_load")
    extra = f", other load {load:.2f} cores" if load is not None and load >= BUSY_CORES else ""
    if res.get("attempts", 1) > 1:
        extra += f", {res['attempts']} attempts"
    wall = f"[{res['wall_s']:.1f} s{extra}]"
    if "gflops" in res:
        return f"{res['gflops']:.1f} GFLOP/s  {wall}"
    return (
        f"{res['median_s'] * 1e6:,.1f} µs/step (p10 {res['p10_s'] * 1e6:,.1f}, p90 {res['p90_s'] * 1e6:,.1f})  {wall}"
    )


# --------------------------------------------------------------------------- other load
# This machine may be shared: another process busy on one of 2 cores makes 2-thread BLAS and
# OpenMP steps many times slower. So the harness waits for a quiet machine before each
# measurement, records how busy *other* processes kept the CPU during it (``foreign_load``,
# in cores), and repeats a measurement that was disturbed.


class LoadMeter:
    """CPU time used by processes other than our children, from /proc/stat and getrusage."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cores = os.cpu_count() or 1

    def snapshot(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / self.tick  # minus idle and iowait
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        ours = ru.ru_utime + ru.ru_stime + me.ru_utime + me.ru_stime
        return busy, ours, time.perf_counter()

    def foreign(self, before, after) -> float | None:
        """Average number of cores kept busy by other processes between two snapshots."""
        if before is None or after is None or after[2] <= before[2]:
            return None
        other = (after[0] - before[0]) - (after[1] - before[1])
        return max(0.0, other / (after[2] - before[2]))

    def wait_quiet(self, max_wait: float, window: float = 0.5) -> float | None:
        """Sleep in ``window`` steps until the foreign load is low, at most ``max_wait`` s."""
        deadline = time.perf_counter() + max_wait
        while True:
            a = self.snapshot()
            time.sleep(window)
            load = self.foreign(a, self.snapshot())
            if load is None or load < BUSY_CORES or time.perf_counter() >= deadline:
                return load


@dataclass
class Patience:
    """How long to wait for a quiet machine: per measurement, extra passes, and a total budget.

    ``budget_s`` is spent by waiting and by re-running disturbed measurements; once it is gone
    the run goes on without waiting, so a busy machine cannot stretch a run without bound.
    Disturbances come in bursts (someone's test suite), so disturbed measurements are re-run in
    ``retries`` later passes at the end of the run rather than at once.
    """

    wait_idle_s: float = 0.0
    retries: int = 0
    budget_s: float = 0.0


def _disturbed(res: dict) -> bool:
    return res["status"] == "ok" and (res.get("foreign_load") or 0) >= BUSY_CORES


def measure_job(job: dict, timeout: float, meter: LoadMeter, patience: Patience, charge_run: bool = False) -> dict:
    """Wait (within the budget) for a quiet machine, then run the job and note the foreign load."""
    t_wait = time.perf_counter()
    if patience.budget_s > 0 and patience.wait_idle_s > 0:
        meter.wait_quiet(min(patience.wait_idle_s, patience.budget_s))
    before, t0 = meter.snapshot(), time.perf_counter()
    res = run_worker(job, timeout)
    res.setdefault("wall_s", time.perf_counter() - t0)
    res["foreign_load"] = meter.foreign(before, meter.snapshot())
    spent = t0 - t_wait + (time.perf_counter() - t0 if charge_run else 0.0)
    patience.budget_s = max(0.0, patience.budget_s - spent)
    return res


def run_jobs(jobs: list[dict], timeout: float, log=print, *, patience: Patience | None = None) -> list[dict]:
    """Run ``jobs`` one after another (then re-run disturbed ones); one result record per job."""
    patience = patience or Patience()
    skipped: dict[str, str] = {}
    results: list[dict] = []
    meter = LoadMeter()

    def finish(res: dict, job: dict, tag: str) -> dict:
        res.update(peer=job["peer"], optimizer=job["optimizer"], dtype=job["dtype"], config=None)
        if job["config"] is not None:
            cfg = Config.from_json(job["config"])
            res.update(config=cfg.name, describe=cfg.describe(), flops=flops_per_step(cfg))
        log(f"[{tag}] {_label(job)}: {_progress(res)}")
        return res

    for k, job in enumerate(jobs, 1):
        peer = job["peer"]
        if peer not in skipped and not module_exists(job["module"]):
            path = job["module"].replace(".", "/") + ".py"
            skipped[peer] = f"{path} not found"
        if peer in skipped:
            res = {"status": "skipped", "reason": skipped[peer]}
        else:
            res = measure_job(job, timeout, meter, patience)
            res["attempts"] = 1
            if res["status"] == "skipped":
                skipped[peer] = res["reason"]
        results.append(finish(res, job, f"{k}/{len(jobs)}"))

    for rerun in range(1, patience.retries + 1):
        todo = [i for i, r in enumerate(results) if _disturbed(r)]
        if not todo or patience.budget_s <= 0:
            break
        log(f"re-running {len(todo)} disturbed measurement(s), pass {rerun} (budget left {patience.budget_s:.0f} s)")
        for n, i in enumerate(todo, 1):
            if patience.budget_s <= 0:
                break
            old = results[i]
            res = measure_job(jobs[i], timeout, meter, patience, charge_run=True)
            res["attempts"] = old.get("attempts", 1) + 1
            if res["status"] == "ok" and (res["foreign_load"] or 0) < (old.get("foreign_load") or 0):
                results[i] = finish(res, jobs[i], f"rerun {n}/{len(todo)}")
            else:
                old["attempts"] = res["attempts"]
                log(f"[rerun {n}/{len(todo)}] {_label(jobs[i])}: kept the first result ({_progress(res)})")
    return results


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark; returns 0, or 1 if a peer failed, or 2 on bad arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, CONFIGS))
        for c in CONFIGS.values():
            print(f"config {c.name:{width}s} {c.describe()}  steps={c.steps} repeats={c.repeats}")
        for name, module in all_peers().items():
            print(f"peer   {name:12s} {module}{'' if module_exists(module) else '  (missing)'}")
        return 0
    if args.render:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        text = report.format_report(data["results"], data["meta"])
        print(text)
        args.out.write_text(text, encoding="utf-8")
        return 0
    try:
        jobs = plan(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    patience = Patience(args.wait_idle, args.retries, args.wait_budget)
    results = run_jobs(jobs, args.timeout, log, patience=patience)
    wall = time.perf_counter() - t0

    meta = report.machine_info()
    meta.update(
        date=started,
        command=" ".join([prog, *map(shlex.quote, argv)]),
        wall_s=wall,
        load_at_start=load_at_start,
        busy_cores=BUSY_CORES,
    )
    text = report.format_report(results, meta)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log(f"wrote {args.out} ({wall:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1), encoding="utf-8")
        log(f"wrote {args.json}")
    return 1 if any(r["status"] == "error" for r in results) else 0
