"""A small NanoAOD-shaped ROOT file, written with uproot, so the Coffea tests stand alone.

It has what ``NanoEventsFactory`` with the NanoAOD schema needs to build ``events.MET.pt``
and ``events.Muon``: run/luminosityBlock/event, MET_pt/MET_phi, and a jagged Muon
collection (nMuon, Muon_pt/eta/phi/mass/charge).
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def write_nanoaod(path: Path, events: int = 2000, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.5, events)
    n = int(counts.sum())
    muons = ak.unflatten(
        ak.zip(
            {
                "pt": rng.exponential(30, n).astype(np.float32),
                "eta": rng.normal(0, 1.5, n).astype(np.float32),
                "phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
                "mass": np.full(n, 0.1057, np.float32),
                "charge": rng.choice([-1, 1], n).astype(np.int32),
            }
        ),
        counts,
    )
    with uproot.recreate(path) as f:
        f.mktree(  # a TTree (a plain assignment would write an RNTuple)
            "Events",
            {
                "run": np.ones(events, np.uint32),
                "luminosityBlock": np.ones(events, np.uint32),
                "event": np.arange(events, dtype=np.uint64),
                "MET_pt": rng.exponential(40, events).astype(np.float32),
                "MET_phi": rng.uniform(-np.pi, np.pi, events).astype(np.float32),
                "Muon": muons,
            },
        )
    return path
