"""A submission the manager cannot accept is answered with the ids of the tasks it carried,
read from its raw JSON, so the client fails those tasks at once instead of waiting for
results that will never come; nothing else is affected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubevine import LocalCluster, Manager, Task
from kubevine.protocol import ErrorMsg, TaskSpec, replace

from .conftest import RawPeer, still_serves


def test_a_raw_malformed_submit_is_answered_with_its_task_ids(
    cluster: Callable[..., LocalCluster], raw: Callable[[str], RawPeer]
) -> None:
    c = cluster(workers=1)
    p = raw(c.address)
    assert p.hello(c.token).type == "welcome"
    bad = (
        b'{"type": "submit", "tasks": ['
        b'{"id": 7, "command": "true", "inputs": [{"remote_name": "../../etc/x", "kind": "buffer",'
        b' "cache_name": "buf-1"}]},'
        b'{"id": 8, "command": "true"}, {"id": "nine"}, "junk"]}'
    )
    p.send([bad])
    err = p.expect("error")
    assert isinstance(err, ErrorMsg) and err.code == "malformed", err
    assert err.task_ids == [7, 8] and "remote_name" in err.message
    p.send([b'{"type": "submit", "tasks": [{"id": 7'])  # not even JSON: no ids to name
    err = p.expect("error")
    assert isinstance(err, ErrorMsg) and err.code == "malformed" and err.task_ids == []
    still_serves(c, workers=1)


class Skewed(Task):
    """A task whose spec a newer (or buggy) client writes in a form this manager refuses."""

    def spec(self, *args: Any, **kw: Any) -> TaskSpec:
        return replace(super().spec(*args, **kw), retries=-1)


def test_the_client_fails_the_tasks_of_a_refused_submission_instead_of_waiting(
    cluster: Callable[..., LocalCluster],
) -> None:
    c = cluster(workers=1)
    with Manager(c.address, token=c.token) as m:
        bad = Skewed("echo never")
        m.submit(bad)
        got = m.wait(30)
        assert got is bad, "the refused task never came back"
        assert not bad.successful() and "malformed" in (bad.error or "") and "retries" in (bad.error or "")
        ok = Task("echo fine")
        m.submit(ok)
        assert m.wait(30) is ok and ok.output == "fine\n"
