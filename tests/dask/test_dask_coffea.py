"""Coffea end to end: NanoEvents over a NanoAOD-shaped file, histograms through ``dask.compute``."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import dask
import hist.dask as hda
import pytest
from coffea.nanoevents import NanoEventsFactory

from kubevine import Manager
from kubevine.dask import last_stats

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning:coffea.*"),  # schema notes about missing branches
    pytest.mark.filterwarnings("ignore::DeprecationWarning:coffea.*"),
]


def test_met_and_muon_histograms_over_25_partitions_equal_the_sync_result(
    m: Manager, nanoaod_file: Path
) -> None:
    events = NanoEventsFactory.from_root(
        {str(nanoaod_file): "Events"}, mode="dask", steps_per_file=25
    ).events()
    assert events.npartitions == 25
    met = hda.Hist.new.Reg(100, 0, 200, name="met", label="$E_{T}^{miss}$ [GeV]").Double().fill(events.MET.pt)
    muon_pt = hda.Hist.new.Reg(50, 0, 150, name="pt").Double().fill(ak.flatten(events.Muon.pt))
    n_muons = ak.sum(ak.num(events.Muon, axis=1))

    ours = dask.compute(met, muon_pt, n_muons, scheduler=m.get)
    sync = dask.compute(met, muon_pt, n_muons, scheduler="sync")
    assert ours[0] == sync[0] and ours[1] == sync[1] and ours[2] == sync[2]
    assert ours[0].sum(flow=True) == 2000
    stats = last_stats(m)
    assert stats is not None and stats.nodes >= 4 * 25
    # a partition's read and its three consumers ran in one call: one call per partition, and
    # the graph (the NanoEvents form in every node) reached each worker once, as a file
    assert stats.calls < 25 + 20 and stats.graph_sends == 0
