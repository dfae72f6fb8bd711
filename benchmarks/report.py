"""Formats benchmark results as Markdown (printed and written to ``--out``).

A *result record* is one peer's dict (see :mod:`benchmarks.peers`) plus ``status``, ``peer``,
``config`` (name, or None for GEMM), ``optimizer``, ``dtype`` and, for step peers, ``flops``
(matmul FLOPs per step) and ``describe`` (e.g. ``"2-8-1 tanh/sigmoid BCE b32"``).

For each (config, optimizer, dtype) group the report gives, per peer: median µs/step and its
p10-p90 spread, GFLOP/s (``flops / median``), the share of the GEMM rate of the same dtype
measured in the same run, and ``speedup vs best other peer`` = (median of the fastest *other*
peer) / (this peer's median): above 1 means faster than every other peer. Bound "peers"
(:data:`benchmarks.peers.BOUNDS`, e.g. ``matmuls``: a step's matrix products alone) are shown
but never compared: each group says how much of every step lies outside its matmuls.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata

from benchmarks.peers import BOUNDS

LIBRARIES = ("numpy", "torch", "jax", "jaxlib", "optax", "numba")
LOSS_RTOL = {"float32": 1e-4, "float64": 1e-9}
LOSS_AFTER_RTOL = {"float32": 2e-3, "float64": 1e-7}
BUSY_CORES = 0.25
"""A result measured while other processes kept more cores than this busy is marked †."""


def disturbed(r: dict) -> bool:
    load = r.get("foreign_load")
    return load is not None and load >= BUSY_CORES


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """CPU, cores, OS and library versions, without importing torch or jax."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    blas = ""
    try:
        import numpy as np

        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{dep.get('name', '?')} {dep.get('version', '')}".strip()
    except Exception:  # informational only
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": versions,
        "blas": blas,
    }


# --------------------------------------------------------------------------- numbers


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_gflops(g: float) -> str:
    return f"{g:.3f}" if g < 1 else f"{g:.1f}" if g < 100 else f"{g:.0f}"


def fmt_share(fraction: float) -> str:
    pct = 100 * fraction
    return f"{pct:.1f} %" if pct >= 1 else f"{pct:.2g} %"


def gemm_rates(results: Iterable[dict]) -> dict[str, float]:
    """dtype -> GFLOP/s from the GEMM results of the run."""
    return {r["dtype"]: r["gflops"] for r in results if r.get("status") == "ok" and "gflops" in r}


def speedups(medians: dict[str, float]) -> dict[str, tuple[float, str] | None]:
    """peer -> (best other peer's median / this median, that other peer), None if alone."""
    out: dict[str, tuple[float, str] | None] = {}
    for peer, t in medians.items():
        others = {p: m for p, m in medians.items() if p != peer}
        if not others:
            out[peer] = None
            continue
        best = min(others, key=others.get)
        out[peer] = (others[best] / t, best)
    return out


def groups(results: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """(config, optimizer, dtype) -> its step-peer records, in run order."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        if r.get("config") is not None:
            out.setdefault((r["config"], r["optimizer"], r["dtype"]), []).append(r)
    return out


def loss_check(rows: list[dict], dtype: str) -> str:
    """One sentence saying whether the peers compute the same training.

    ``first_loss`` (initial parameters, batch 0) checks the forward pass and loss;
    ``loss_after_steps`` (after ``steps`` updates) checks gradients and optimizer updates.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    parts, bad_parts = [], []
    for key, label, rtol in (
        ("first_loss", "first-step loss", LOSS_RTOL),
        ("loss_after_steps", "loss after one block of steps", LOSS_AFTER_RTOL),
    ):
        losses = {r["peer"]: r[key] for r in ok if r.get(key) is not None}
        if len(losses) < 2:
            continue
        ref_peer = "numpy" if "numpy" in losses else next(iter(losses))
        ref = losses[ref_peer]
        tol = rtol.get(dtype, 1e-4)
        rel = {p: abs(v - ref) / max(abs(ref), 1e-300) for p, v in losses.items()}
        bad = {p: losses[p] for p, e in rel.items() if e > tol}
        if bad:
            who = ", ".join(f"{p} {v:.10g}" for p, v in bad.items())
            bad_parts.append(f"**{label} disagrees** with {ref_peer} ({ref:.10g}): {who}")
        else:
            parts.append(f"{label} {ref:.6g} (max rel. diff {max(rel.values()):.0e})")
    text = ""
    if bad_parts:
        text += "; ".join(bad_parts) + ". "
    if parts:
        text += "Peers agree on: " + "; ".join(parts) + "."
    return text.strip()


def floor_note(rows: list[dict]) -> str:
    """One sentence comparing each step peer with the group's bound (the matmuls alone)."""
    ok = {r["peer"]: r["median_s"] for r in rows if r.get("status") == "ok"}
    bounds = [p for p in ok if p in BOUNDS]
    if not bounds:
        return ""
    floor = ok[bounds[0]]
    parts = [
        f"{p} {100 * floor / t:.0f} % ("
        + (f"{fmt_us(t - floor)} µs outside them)" if t >= floor else "its products beat NumPy's BLAS here)")
        for p, t in ok.items()
        if p not in BOUNDS
    ]
    if not parts:
        return ""
    return (
        f"The step's matmuls alone (`{bounds[0]}`: NumPy, these shapes, nothing else) take {fmt_us(floor)} µs; "
        "their share of each peer's step: " + ", ".join(parts) + "."
    )


# --------------------------------------------------------------------------- tables


def group_table(rows: list[dict], gemm: dict[str, float]) -> list[str]:
    """Markdown lines of one group's table (skipped peers are left out)."""
    ok = {r["peer"]: r for r in rows if r.get("status") == "ok"}
    sp = speedups({p: r["median_s"] for p, r in ok.items() if p not in BOUNDS})
    lines = [
        "| peer | µs/step | p10 – p90 | GFLOP/s | % of GEMM | speedup vs best other | first call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peer = r["peer"]
        if r.get("status") == "skipped":
            continue
        if r.get("status") != "ok":
            lines.append(f"| {peer} | error: {r.get('error', '?')} | | | | | |")
            continue
        g = r["flops"] / r["median_s"] / 1e9
        rate = gemm.get(r["dtype"])
        share = fmt_share(g / rate) if rate else "—"
        s = sp.get(peer)
        speed = "bound, not a step" if peer in BOUNDS else "—" if s is None else f"{s[0]:.2f}× ({s[1]})"
        first = r.get("first_call_s")
        mark = " †" if disturbed(r) else ""
        lines.append(
            f"| {peer} | {fmt_us(r['median_s'])}{mark} | {fmt_us(r['p10_s'])} – {fmt_us(r['p90_s'])} "
            f"| {fmt_gflops(g)} | {share} | {speed} | {'' if first is None else f'{first:.2f}'} |"
        )
    return lines


def summary_table(grouped: dict[tuple[str, str, str], list[dict]], peers: list[str]) -> list[str]:
    """Config x optimizer x dtype rows, one µs/step column per peer; the fastest in bold."""
    lines = [
        "| config | optimizer | dtype | " + " | ".join(peers) + " | fastest |",
        "|---|---|---|" + "---:|" * len(peers) + "---|",
    ]
    for (cname, opt, dt), rows in grouped.items():
        by_peer = {r["peer"]: r for r in rows}
        ok = {p: r["median_s"] for p, r in by_peer.items() if r.get("status") == "ok" and p not in BOUNDS}
        best = min(ok, key=ok.get) if ok else None
        cells = []
        for p in peers:
            r = by_peer.get(p)
            if r is None or r.get("status") == "skipped":
                cells.append("—")
            elif r.get("status") != "ok":
                cells.append("error")
            else:
                cell = fmt_us(r["median_s"]) + (" †" if disturbed(r) else "")
                cells.append(f"**{cell}**" if p == best else cell)
        lines.append(f"| {cname} | {opt} | {dt} | " + " | ".join(cells) + f" | {best or '—'} |")
    return lines


def format_report(results: list[dict], meta: dict) -> str:
    """The whole Markdown report."""
    gemm = gemm_rates(results)
    grouped = groups(results)
    step_results = [r for r in results if r.get("config") is not None]
    peers = list(dict.fromkeys(r["peer"] for r in step_results))
    shown = [p for p in peers if any(r["peer"] == p and r.get("status") != "skipped" for r in step_results)]
    skipped = {r["peer"]: r.get("reason", "") for r in results if r.get("status") == "skipped"}

    v = meta.get("versions", {})
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val) or "—"
    missing = [k for k, val in v.items() if not val]
    gemm_text = ", ".join(f"{dt}: {g:.1f} GFLOP/s" for dt, g in sorted(gemm.items())) or "not measured"
    out = [
        "# `derive bench` results",
        "",
        "| | |",
        "|---|---|",
        f"| date | {meta.get('date', '?')} |",
        f"| command | `{meta.get('command', '?')}` |",
        f"| machine | {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('os', '')} |",
        f"| python / libraries | python {meta.get('python', '?')}; {libs}"
        + (f" (not installed: {', '.join(missing)})" if missing else "")
        + (f"; BLAS {meta['blas']}" if meta.get("blas") else "")
        + " |",
        f"| GEMM rate (numpy matmul 2048², default threads) | {gemm_text} |",
    ]
    if "wall_s" in meta:
        out.append(f"| wall time of the run | {meta['wall_s']:.0f} s |")
    if meta.get("load_at_start") is not None:
        out.append(f"| load average at start | {meta['load_at_start']:.2f} |")
    out += [
        "",
        "Median time of one training step (forward + loss + backward + update on a new mini-batch "
        "from a pool of 64) after warm-up, each peer in its own fresh subprocess, GC off while "
        "timing. p10 – p90: spread over the timed repeats. GFLOP/s counts matmul FLOPs only "
        "(forward, weight gradients, input gradients except layer 1). *speedup vs best other* = "
        "median of the fastest other peer / this peer's median (> 1: faster than all others). "
        "*first call*: the first block of steps, JIT compilation included. Differences under "
        "~15 % on medium/large layers are noise; JAX varies ±25–30 % between runs.",
        "",
    ]
    if skipped:
        out.append("Skipped: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()) + ".")
        out.append("")
    noisy = [r for r in results if r.get("status") == "ok" and disturbed(r)]
    if noisy:
        out.append(
            f"† {len(noisy)} measurement(s) ran while other processes kept ≥ {BUSY_CORES} cores "
            "busy (after retries); their times are likely too slow: "
            + ", ".join(
                f"{r['peer']} {r.get('config') or ''} {r.get('optimizer') or ''} {r['dtype']} "
                f"({r['foreign_load']:.2f})".replace("  ", " ")
                for r in noisy
            )
            + "."
        )
        out.append("")
    errors = [r for r in results if r.get("status") == "error"]
    if errors:
        out.append("Errors:")
        out += [
            f"- {r['peer']} {r.get('config') or ''} {r.get('optimizer') or ''} {r['dtype']}: {r.get('error', '?')}"
            for r in errors
        ]
        out.append("")
    if grouped:
        out += ["## Summary: median µs per step (fastest in bold)", ""]
        out += summary_table(grouped, shown)
        out.append("")
        out += ["## Details", ""]
        for (cname, opt, dt), rows in grouped.items():
            first = rows[0]
            flops = first.get("flops")
            head = f"### {cname} · {opt} · {dt}"
            if first.get("describe"):
                head += f" — {first['describe']}"
            if flops is not None:
                head += f", {flops:,} FLOP/step"
            out += [head, ""]
            out += group_table(rows, gemm)
            for line in (loss_check(rows, dt), floor_note(rows)):
                if line:
                    out += ["", line]
            out.append("")
    return "\n".join(out).rstrip() + "\n"
