"""In a cluster: the transactions log on stdout as JSON objects, and JSON logs carrying ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubevine import LocalCluster, Manager, Task, txformat


def test_a_manager_echoes_every_event_to_stdout_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEVINE_TRANSACTIONS_STDOUT", "1")
    monkeypatch.setenv("KUBEVINE_LOG_FORMAT", "json")
    c = LocalCluster(workers=1, workdir=tmp_path / "c", log_level="INFO")
    c.start()
    try:
        with Manager(c.address, token=c.token) as m:
            for i in range(20):
                m.submit(Task(f"echo {i}"))
            assert sum(1 for t in m.results(timeout=30) if t.successful()) == 20
    finally:
        c.stop()
    mdir = tmp_path / "c" / "manager"
    # the manager's stdout and stderr both went to manager.log: events and logs, all JSON
    objects = [json.loads(line) for line in (mdir / "manager.log").read_text().splitlines()]
    events = [o for o in objects if "kind" in o]
    logs = [o for o in objects if "level" in o]
    assert len(events) + len(logs) == len(objects)
    # the echo holds exactly what the file holds, typed
    in_file = txformat.read(mdir / "transactions.log")
    assert [(e["kind"], e["subject"], e["event"]) for e in events] == [
        (e.kind, e.subject, e.event) for e in in_file
    ]
    done = [e for e in events if e["kind"] == "TASK" and e["event"] == "done"]
    assert len(done) == 20
    assert all(isinstance(e["attempt"], int) and isinstance(e["wall"], float) for e in done)
    assert all(isinstance(e["subject"], str) and isinstance(e["worker"], str) for e in done)
    # every log line names the workflow and the manager it comes from
    assert logs, "no log lines at INFO"
    manager_id = in_file[0].manager
    assert all(o["workflow"] == c.name and o["manager"] == manager_id for o in logs)


def test_worker_log_lines_name_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVINE_LOG_FORMAT", "json")
    c = LocalCluster(workers=1, workdir=tmp_path / "c", log_level="INFO")
    c.start()
    c.stop()
    lines = (tmp_path / "c" / "worker-0" / "worker.log").read_text().splitlines()
    objects = [json.loads(line) for line in lines]
    assert objects
    ids = {o.get("worker") for o in objects}
    assert len(ids) == 1 and None not in ids
