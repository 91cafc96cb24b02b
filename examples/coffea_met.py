"""The seed's Coffea example on kubevine: the missing-transverse-energy histogram of NanoAOD files.

The analysis is plain Coffea + hist; the only kubevine line is the scheduler handed to
``compute``. Each partition runs as a call in a warm library on the workers, which keeps
the ROOT files' metadata open across partitions and runs.

    python examples/coffea_met.py FILE.root|root://SERVER//PATH.root [...] [--steps-per-file 5]
        [--output met.png] [--manager HOST:PORT] [--workers 2] [--progress]

Without ``--manager`` a local manager and ``--workers`` workers are started and stopped.
With it, the token comes from ``KUBEVINE_TOKEN`` (or ``--token``).

Files given as ``root://`` URLs are never read over the network by the analysis: each is
declared with ``declare_xrootd``, so a worker copies it with ``xrdcp`` into its node's cache
once, and every partition reads that local copy (the workers need XRootD's client; the
machine running this script does not). The graph names such a file by its name in the
call's folder, and its NanoAOD form is read by one task on a worker, from the cache too.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")

import hist.dask as hda
import matplotlib.pyplot as plt
import uproot
from coffea.nanoevents import NanoEventsFactory

import kubevine

XROOTD = ("root://", "roots://", "xroot://")


def base_form(name: str) -> str:
    """On a worker, in a task's folder: the form ``uproot.dask`` gives the file's Events tree,
    read as ``NanoEventsFactory.from_root`` reads it (JSON)."""
    import uproot
    from coffea.nanoevents.factory import _is_interpretable

    events = uproot.dask(
        {name: "Events"},
        full_paths=True,
        open_files=False,
        ak_add_doc={"__doc__": "title", "typename": "typename"},
        filter_branch=_is_interpretable,
    )
    form: str = events.form.to_json()
    return form


def open_files(m: kubevine.Manager, paths: list[str]) -> tuple[dict[str, str], dict[Any, str], Any]:
    """The files as the graph names them, the root:// ones declared with the worker cache as
    ``{File: name in the call's folder}``, and the base form when any is remote (else None:
    Coffea reads it from the first local file)."""
    import awkward as ak

    fileset: dict[str, str] = {}
    remote: dict[Any, str] = {}
    for path in paths:
        if not path.startswith(XROOTD):
            fileset[os.path.abspath(path)] = "Events"
            continue
        f = m.declare_xrootd(path)
        name = f"xrootd-{f.cache_name()[4:20]}-{os.path.basename(path)}"
        remote[f] = name
        fileset[name] = "Events"
    if not remote:
        return fileset, remote, None
    f, name = next(iter(remote.items()))
    t = kubevine.PythonTask(base_form, name)
    t.add_input(f, name)
    m.submit(t)
    if m.wait(600) is not t or not t.successful():
        raise SystemExit(f"could not read the form of {name}: {t.result}: {t.error}")
    return fileset, remote, ak.forms.from_json(t.output)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "files", nargs="+", help="NanoAOD ROOT files (a TTree named Events): paths or root:// URLs"
    )
    ap.add_argument("--steps-per-file", type=int, default=5, help="partitions per file")
    ap.add_argument("--output", default="met.png", help="where to save the plot (PNG)")
    ap.add_argument("--manager", default=None, help="HOST:PORT of a running manager")
    ap.add_argument("--token", default=None, help="the workflow token (default: $KUBEVINE_TOKEN)")
    ap.add_argument("--workers", type=int, default=2, help="local workers, without --manager")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    args = ap.parse_args(argv)

    if args.manager:
        manager = kubevine.Manager(args.manager, token=args.token)
    else:
        manager = kubevine.Manager(workers=args.workers)
    with manager as m:
        fileset, remote, form = open_files(m, args.files)
        with warnings.catch_warnings():  # the NanoAOD schema notes every branch a file lacks
            warnings.simplefilter("ignore", RuntimeWarning)
            events = NanoEventsFactory.from_root(
                fileset,
                mode="dask",
                steps_per_file=args.steps_per_file,
                known_base_form=form,
                # a cached file is mapped once when opened: a warm library keeps it open across
                # calls, each in a folder of its own (the name alone is no good in the next one)
                uproot_options={"handler": uproot.source.file.MemmapSource} if remote else {},
            ).events()
        h = hda.Hist.new.Reg(100, 0, 200, name="met", label="$E_{T}^{miss}$ [GeV]").Double()
        h.fill(events.MET.pt)
        t0 = time.perf_counter()
        result = h.compute(scheduler=m.get, progress=args.progress, extra_files=remote)
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
