"""A restarted manager reloads the whole workflow from Redis, not only tasks: installed
libraries and the calls waiting on them, the files clients sent, the replicas workers held,
the workers seen and the totals. The new manager runs in a fresh work directory (as a
rescheduled pod would), and no client installs or sends anything again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
import zmq

from kubevine import FunctionCall, Manager, Task, keys
from kubevine.protocol import (
    PROTOCOL_VERSION,
    FileBinding,
    FileKind,
    Hello,
    Results,
    Submit,
    TaskSpec,
    Welcome,
    decode,
    encode,
)

from .procs import TOKEN, Procs, count_runs, slow_square


def test_a_restarted_manager_reloads_libraries_files_replicas_workers_and_totals(
    tmp_path: Path, redis_url: str, workflow_name: str
) -> None:
    procs = Procs(tmp_path)
    runs = tmp_path / "runs"
    try:
        address = procs.manager(redis_url, workflow_name)
        port = int(address.rsplit(":", 1)[1])
        for i in range(2):
            procs.worker(address, i)
        with Manager(address, token=TOKEN, client="a") as a:
            a.install_library(a.create_library_from_functions("sq", slow_square, exec_mode="direct"))
            data = a.declare_buffer(b"payload-42\n")
            part = a.declare_temp()
            prod = Task(f"cat data > part; echo produced >> {runs}")
            prod.add_input(data, "data")
            prod.add_output(part, "part")
            a.submit(prod)
            assert a.wait(30) is prod and prod.successful()
            calls = [FunctionCall("sq", "slow_square", i) for i in range(40)]
            for c in calls:
                a.submit(c)
            first = [a.wait(30) for _ in range(5)]
            assert all(t is not None for t in first)
            before = a.status().totals
            data_name = data.cache_name()
        # client "a" has left (its collected results acknowledged); 35 calls are outstanding
        r = redis.Redis.from_url(redis_url)
        assert r.hlen(keys.libraries(workflow_name)) == 1 and r.hexists(keys.files(workflow_name), data_name)
        assert r.hlen(keys.replicas(workflow_name)) >= 2  # the buffer and the temp, on a worker
        deadline = time.monotonic() + 10
        while (
            json.loads(r.hget(keys.records(workflow_name), str(prod.id)) or "[]")[1:2] != ["done"]
            or r.hexists(keys.results(workflow_name), str(prod.id))
            or any(r.hexists(keys.records(workflow_name), str(t.id)) for t in first)
        ):  # the acknowledgements "a" sent as it left are stored (written a moment later): the
            # collected calls are gone from the store, the producer of a temp stays, done, without
            # its result. (A result is sent to its client before it is stored, so "no stored
            # result" alone could be a result still on its way to Redis, with its acknowledgement.)
            assert time.monotonic() < deadline, "the client's acknowledgements were never stored"
            time.sleep(0.02)
        r.close()
        procs.kill_manager()
        procs.manager(redis_url, workflow_name, port=port, workdir=tmp_path / "m2")

        # the same client name, a new process: its outstanding calls need the reloaded library
        with Manager(address, token=TOKEN, client="a", attach=True) as a2:
            assert len(a2.attached) == 35
            got = list(a2)
            assert sorted(t.id for t in got) == sorted(c.id for c in calls if c not in first)
            assert all(t.output == (t.id - calls[0].id) ** 2 for t in got)  # type: ignore[operator]
            totals = a2.status().totals
        assert totals["submitted"] == before["submitted"] == 41
        assert totals["done"] == 41

        # a client that never installed anything: the library, the temp's replica
        with Manager(address, token=TOKEN, client="b") as b:
            call = FunctionCall("sq", "slow_square", 7)
            b.submit(call)
            cons = Task("cat part")
            cons.add_input(part, "part")
            b.submit(cons)
            done = {t.id: t for t in (b.wait(30), b.wait(30)) if t is not None}
            assert done[call.id].output == 49
            assert done[cons.id].output == "payload-42\n", done[cons.id].error
        assert count_runs(runs) == {"produced": 1}  # the temp was found, not made again

        # a task naming the buffer client "a" sent, without sending it: the manager has it
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://{address}")
        s.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION, token=TOKEN, role="client", client="raw")))
        welcome = None
        while not isinstance(welcome, Welcome):
            assert s.poll(30_000)
            welcome, _ = decode(s.recv_multipart())
        binding = FileBinding(cache_name=data_name, remote_name="data", kind=FileKind.BUFFER)
        tid = welcome.first_task_id
        assert tid is not None
        s.send_multipart(encode(Submit(tasks=[TaskSpec(id=tid, command="cat data", inputs=[binding])])))
        result = None
        while result is None:
            assert s.poll(30_000)
            msg, frames = decode(s.recv_multipart())
            if isinstance(msg, Results):
                res = msg.results[0]
                assert res.state == "done", res.error
                result = frames[res.output_frame] if res.output_frame is not None else b""
        s.close(0)
        assert result == b"payload-42\n"
        assert any((tmp_path / "m2" / "files").rglob("*"))  # written back to the new workdir

        restored = [
            ln for ln in (tmp_path / "m" / "transactions.log").read_text().splitlines() if " restored " in ln
        ]
        assert not restored  # the first manager restored nothing
        line = next(
            ln for ln in (tmp_path / "m2" / "transactions.log").read_text().splitlines() if " restored " in ln
        )
        assert "workers=2 libraries=1" in line and "files=1" in line and " seconds=" in line
        assert all(w.poll() is None for w in procs.workers)
    finally:
        procs.stop()
