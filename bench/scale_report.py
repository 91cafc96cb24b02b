"""How bench/scale.py prints its figures: the rows, the summaries with the targets beside
them, and the final JSON line's values (apart from the measuring, so each stays short)."""

from __future__ import annotations

import math
from typing import Any


def fmt(x: float, spec: str = ".0f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _finite(x: Any) -> Any:
    """NaN (a figure that could not be measured: the run collapsed) as null, for strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def print_idle_row(r: dict[str, Any]) -> None:
    print(
        f"  {r['workers']:7d} {r['register_s']:10.2f} {100 * r['cpu']:10.1f}% "
        f"{fmt(1e3 * r['probe_p50'], '.1f'):>8}/{fmt(1e3 * r['probe_max'], '.0f'):<8} "
        f"{fmt(r['status_p50'], '.3f'):>8}/{fmt(r['status_max'], '.2f'):<8} {r['load']:>14}",
        flush=True,
    )


DISPATCH_HEAD = (
    "\ndispatch (simulated workers, instant tasks, state in memory)\n"
    f"  {'kind':6} {'workers':>7} {'n':>7} {'rate/s':>8} {'e2e/s':>7} {'cpu us/t':>8} "
    f"{'probe p50/max ms':>17} {'status p50/max s':>17} {'/metrics p50/max s':>19} {'load':>14}"
)


def print_dispatch_row(r: dict[str, Any]) -> None:
    print(
        f"  {r['kind']:6} {r['workers']:7d} {r['n']:7d} {fmt(r['rate']):>8} {fmt(r['rate_e2e']):>7} "
        f"{fmt(r['cpu_us_per_task']):>8} "
        f"{fmt(1e3 * r['probe_p50'], '.1f'):>8}/{fmt(1e3 * r['probe_max'], '.0f'):<8} "
        f"{fmt(r['status_p50'], '.3f'):>8}/{fmt(r['status_max'], '.2f'):<8} "
        f"{fmt(r['metrics_p50'], '.3f'):>9}/{fmt(r['metrics_max'], '.2f'):<9} {r['load']:>14}"
        + (
            f"  (registered in {r['register_s']:.1f} s"
            if not math.isnan(r["register_s"])
            else "  (never all registered"
        )
        + f"; lone prober p50/max {fmt(1e3 * r['lone_p50'], '.1f')}/{fmt(1e3 * r['lone_max'], '.0f')} ms"
        + (f"; {r['lost']} workers declared lost" if r["lost"] else "")
        + (f"; only {r['done']} of {r['n']} done" if r["done"] < r["n"] else "")
        + (f"; {r['libraries']} library instances)" if r["kind"] == "calls" else ")"),
        flush=True,
    )


def dispatch_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print()
    for kind in ("tasks", "calls"):
        by = {r["workers"]: r for r in rows if r["kind"] == kind}
        base = by.get(10)
        for w, need in ((1000, 0.8), (5000, 0.5)):
            if base is not None and w in by:
                ratio = by[w]["rate"] / base["rate"]
                out[f"dispatch_ratio_{w}_vs_10" + ("" if kind == "tasks" else "_calls")] = round(ratio, 3)
                print(f"  {kind} rate at {w} / at 10 workers: {ratio:5.2f}   target >= {need:.2f}: "
                      f"{verdict(ratio >= need)}")  # fmt: skip
        out[f"{kind}_per_s"] = {str(w): round(r["rate"]) for w, r in by.items() if not math.isnan(r["rate"])}
    worst = max((r["lone_max"] for r in rows), default=float("nan"))
    in_fleet = max((r["probe_max"] for r in rows), default=float("nan"))
    status = max((r["status_max"] for r in rows), default=float("nan"))
    out["max_heartbeat_answer_s"] = round(worst, 3)
    out["max_probe_in_simulator_s"] = round(in_fleet, 3)
    out["max_status_s"] = round(status, 3)
    out["max_metrics_s"] = round(max((r["metrics_max"] for r in rows), default=float("nan")), 3)
    print(
        f"  worst heartbeat answer (lone prober) {worst:.3f} s   target <= 1 s at every size: "
        f"{verdict(worst <= 1)}   (probers inside the simulators: {in_fleet:.3f} s)"
    )
    return out


def print_queue_row(r: dict[str, Any]) -> None:
    print(
        f"\nqueued {r['n']:,} command tasks (state in Redis; load {r['load']})\n"
        f"  submit from one client {r['submit_s']:7.1f} s   held by the manager {r['held_s']:7.1f} s   "
        f"durable {r['durable_s']:7.1f} s\n"
        f"  manager CPU {r['cpu_us_per_task']:6.0f} us/task   RSS {r['rss_per_task']:6.0f} B/queued task "
        f"({r['rss_mb']:.0f} MB)   target <= 2,048: {verdict(r['rss_per_task'] <= 2048)}\n"
        f"  Redis {r['redis_per_task']:6.0f} B/task",
        flush=True,
    )
    if "restart_first_dispatch_s" in r:
        ok = r["restart_first_dispatch_s"] <= 5
        print(
            f"  kill -9 and restart: first dispatch {r['restart_first_dispatch_s']:.2f} s after the process "
            f"started (all tasks loaded after {r['restore_load_s']:.2f} s, serving meanwhile; "
            f"RSS {r['restart_rss_mb']:.0f} MB)   "
            f"target <= 5 s: {verdict(ok)}\n"
            f"  then, 100 workers on the deep queue: {fmt(r['deep_rate'])} tasks/s, "
            f"{fmt(r['deep_cpu_us_per_task'])} us CPU/task",
            flush=True,
        )


def queue_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    big = max(rows, key=lambda r: r["n"])
    out: dict[str, Any] = {
        "rss_bytes_per_queued_task": round(big["rss_per_task"]),
        "rss_queued_n": big["n"],
        "redis_bytes_per_task": round(big["redis_per_task"]),
        f"submit_{big['n']}_s": round(big["submit_s"], 1),
    }
    restarted = [r for r in rows if "restart_first_dispatch_s" in r]
    if restarted:
        r = max(restarted, key=lambda r: r["n"])
        out["restart_first_dispatch_s"] = round(r["restart_first_dispatch_s"], 2)
        out["restart_n"] = r["n"]
    return out


def print_durable(d: dict[str, Any], runs: int) -> None:
    print(f"\ndurable state: memory vs Redis, 2 real workers x 1 core, median of {runs} (load {d['load']})")
    for label, target in (("calls", 0.10), ("commands", 0.05)):
        x = d[label]
        cost = 1 - x["redis"] / x["memory"]
        cpu_cost = x["cpu_redis"] / x["cpu_memory"] - 1
        mem, red = x["runs"]
        print(
            f"  {label:8} memory {x['memory']:7.0f}/s  Redis {x['redis']:7.0f}/s  cost {100 * cost:5.1f} %   "
            f"target <= {100 * target:.0f} %: {verdict(cost <= target)}\n"
            f"           manager CPU {x['cpu_memory']:.0f} -> {x['cpu_redis']:.0f} us/task "
            f"(+{100 * cpu_cost:.0f} %)   runs: {', '.join(f'{r:.0f}' for r, _ in mem)} | "
            f"{', '.join(f'{r:.0f}' for r, _ in red)}",
            flush=True,
        )
