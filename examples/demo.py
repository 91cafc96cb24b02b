"""`make demo`: a real workflow on a local manager and two workers.

Counts the words of 300 generated text chunks. Each chunk is a declared input file; each
task runs a shell pipeline on it in its own sandbox and sends back an output file; the
client merges the counts. A progress bar runs while tasks finish, and a one-screen
summary follows. `--report run.png` (or `run.html`, repeatable) also draws the run from the
manager's transactions log, as `kubevine report` would
(`make demo DEMO_ARGS="--report run.png"`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

import kubevine

WORDS = [
    *("muon", "electron", "jet", "photon", "tau", "neutrino", "quark", "gluon", "boson"),
    *("higgs", "lepton", "hadron", "vertex", "track", "cluster", "trigger", "calorimeter"),
    *("detector", "luminosity", "collision", "event"),
]


def make_chunks(root: Path, n: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        p = root / f"chunk{i:03d}.txt"
        p.write_text(" ".join(rng.choice(WORDS) for _ in range(2000)) + "\n")
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="PATH",
        help="draw the run to PATH (.png or .html; repeatable), from the manager's transactions log",
    )
    args = ap.parse_args(argv)
    for out in args.report:
        if Path(out).suffix.lower() not in (".png", ".html", ".htm"):
            ap.error(f"--report {out}: the picture is written as .png or .html")
    show = sys.stderr.isatty() if args.progress is None else args.progress

    with tempfile.TemporaryDirectory(prefix="kubevine-demo-") as tmp:
        root = Path(tmp)
        chunks = make_chunks(root, args.tasks, seed=7)
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if args.report:  # a cluster of our own, to keep the manager's transactions log
                cluster = stack.enter_context(kubevine.LocalCluster(args.workers, workdir=root / "cluster"))
                m = stack.enter_context(kubevine.Manager(cluster.address, token=cluster.token))
            else:
                m = stack.enter_context(kubevine.Manager(workers=args.workers))
            started = time.perf_counter()
            for i, chunk in enumerate(chunks):
                t = kubevine.Task("tr -s ' ' '\\n' < chunk.txt | sort | uniq -c > counts.txt")
                t.add_input(m.declare_file(chunk), "chunk.txt")
                t.add_output(m.declare_file(root / f"counts{i:03d}.txt"), "counts.txt")
                t.set_tag(f"chunk{i}")
                m.submit(t)
            per_worker: collections.Counter[str] = collections.Counter()
            failed = []
            with tqdm(total=args.tasks, unit="task", disable=not show, desc="counting") as bar:
                while (t := m.wait(60)) is not None:
                    per_worker[t.worker or "?"] += 1
                    if not t.successful():
                        failed.append(t)
                    bar.update(1)
            elapsed = time.perf_counter() - started
            status = m.status()
        total = time.perf_counter() - t0

        counts: collections.Counter[str] = collections.Counter()
        for p in sorted(root.glob("counts*.txt")):
            for line in p.read_text().splitlines():
                n, word = line.split()
                counts[word] += int(n)
        drawn = []
        if args.report:  # the cluster has stopped: its transactions log is complete
            from kubevine import report

            run = report.load(root / "cluster" / "manager" / "transactions.log")
            drawn = [report.render(run, out, title="make demo") for out in args.report]

    words = sum(counts.values())
    print("kubevine demo: word count over generated text")
    print(
        f"  tasks        {args.tasks} submitted, {args.tasks - len(failed)} successful, {len(failed)} failed"
    )
    print(
        f"  time         {elapsed:.2f} s running ({args.tasks / elapsed:.0f} tasks/s), "
        f"{total:.2f} s with start-up"
    )
    print(
        f"  workers      {len(per_worker)}: " + ", ".join(f"{n} tasks" for _, n in per_worker.most_common())
    )
    print(f"  manager      {status.totals['done']} done, state in {'Redis' if status.durable else 'memory'}")
    print(f"  words        {words} counted; expected {args.tasks * 2000}")
    print("  most common  " + ", ".join(f"{w} {n}" for w, n in counts.most_common(5)))
    for t in failed[:5]:
        print(f"  failed       task {t.id}: {t.result} {t.error}")
    for path in drawn:
        print(f"  report       {path}")
    ok = not failed and words == args.tasks * 2000
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
