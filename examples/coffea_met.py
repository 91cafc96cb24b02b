"""The seed's Coffea example on kubevine: the missing-transverse-energy histogram of NanoAOD files.

The analysis is plain Coffea + hist; the only kubevine line is the scheduler handed to
``compute``. Each partition runs as a call in a warm library on the workers, which keeps
the ROOT files' metadata open across partitions and runs.

    python examples/coffea_met.py FILE.root [FILE.root ...] [--steps-per-file 5]
        [--output met.png] [--manager HOST:PORT] [--workers 2] [--progress]

Without ``--manager`` a local manager and ``--workers`` workers are started and stopped.
With it, the token comes from ``KUBEVINE_TOKEN`` (or ``--token``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import matplotlib

matplotlib.use("Agg")

import hist.dask as hda
import matplotlib.pyplot as plt
from coffea.nanoevents import NanoEventsFactory

import kubevine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="NanoAOD ROOT files (a TTree named Events)")
    ap.add_argument("--steps-per-file", type=int, default=5, help="partitions per file")
    ap.add_argument("--output", default="met.png", help="where to save the plot (PNG)")
    ap.add_argument("--manager", default=None, help="HOST:PORT of a running manager")
    ap.add_argument("--token", default=None, help="the workflow token (default: $KUBEVINE_TOKEN)")
    ap.add_argument("--workers", type=int, default=2, help="local workers, without --manager")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    args = ap.parse_args(argv)

    with warnings.catch_warnings():  # the NanoAOD schema notes every branch a file lacks
        warnings.simplefilter("ignore", RuntimeWarning)
        events = NanoEventsFactory.from_root(
            {path: "Events" for path in args.files}, mode="dask", steps_per_file=args.steps_per_file
        ).events()
    h = hda.Hist.new.Reg(100, 0, 200, name="met", label="$E_{T}^{miss}$ [GeV]").Double().fill(events.MET.pt)

    if args.manager:
        manager = kubevine.Manager(args.manager, token=args.token)
    else:
        manager = kubevine.Manager(workers=args.workers)
    with manager as m:
        t0 = time.perf_counter()
        result = h.compute(scheduler=m.get, progress=args.progress)
        seconds = time.perf_counter() - t0

    fig, ax = plt.subplots()
    result.plot1d(ax=ax)
    ax.set_ylabel("events")
    fig.savefig(args.output, dpi=100)
    print(
        f"MET histogram: {result.sum(flow=True):.0f} events from {len(args.files)} file(s) "
        f"in {events.npartitions} partitions, {seconds:.1f}s; plot saved to {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
