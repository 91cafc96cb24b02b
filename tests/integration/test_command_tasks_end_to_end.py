"""Command tasks end to end: client → manager → workers → client, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from kubevine import Task, keys
from kubevine.testing import wait_for


def test_a_thousand_tasks_on_two_workers_with_redis_all_complete_correctly(
    cluster, client, redis_url: str, workflow_name: str, tmp_path: Path
) -> None:
    c = cluster(workers=2, redis=redis_url, name=workflow_name)
    m = client(c)
    table = m.declare_buffer("".join(f"{i} {i * i}\n" for i in range(1000)))
    expected = {}
    for i in range(1000):
        t = Task(f"grep '^{i} ' table.txt | cut -d' ' -f2")
        t.add_input(table, "table.txt")
        expected[m.submit(t)] = f"{i * i}\n"
    seen = {}
    while (t := m.wait(60)) is not None:
        assert t.successful(), (t.outcome, t.error, t.output)
        seen[t.id] = t.output
    assert seen == expected
    assert m.empty()
    st = m.status()
    assert st.totals["done"] == 1000 and st.durable
    assert {w.id for w in st.workers} and len(st.workers) == 2
    # collected results are gone from Redis; the workflow's bookkeeping stays
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.hlen(keys.results(workflow_name)) == 0, what="acknowledged results dropped from Redis")
    assert int(r.hget(keys.meta(workflow_name), "next_task_id") or 0) > 1000


def test_inputs_outputs_and_environment_reach_the_command(cluster, client, tmp_path: Path) -> None:
    c = cluster(workers=1)
    m = client(c)
    src = tmp_path / "in.txt"
    src.write_text("lorem ipsum\n")
    out = tmp_path / "results" / "out.txt"
    t = Task('tr a-z A-Z < data > upper; echo "$GREETING"; ls')
    t.add_input(m.declare_file(src), "data")
    t.add_output(m.declare_file(out), "upper")
    t.set_env_var("GREETING", "hello from the task")
    m.submit(t)
    done = m.wait(30)
    assert done is t and t.successful() and t.exit_code == 0
    assert out.read_text() == "LOREM IPSUM\n"
    assert t.output.splitlines() == ["hello from the task", "data", "upper"]  # a clean sandbox


def test_a_missing_output_is_reported_as_output_missing_and_not_successful(
    cluster, client, tmp_path: Path
) -> None:
    m = client(cluster(workers=1))
    t = Task("true")
    t.add_output(m.declare_file(tmp_path / "never"), "never")
    m.submit(t)
    assert m.wait(30) is t
    assert t.result == "output missing" and t.outcome == "output_missing"  # TaskVine's and ours
    assert not t.completed() and not t.successful()  # TaskVine: only a "success" result completed
    assert "never" in (t.error or "")


def test_a_nonzero_exit_reports_code_and_output(cluster, client) -> None:
    m = client(cluster(workers=1))
    t = Task("echo failing on purpose; exit 7")
    m.submit(t)
    assert m.wait(30) is t
    assert t.completed() and not t.successful()
    assert t.exit_code == 7 and t.output == "failing on purpose\n"


def test_an_unknown_command_fails_like_in_a_shell(cluster, client) -> None:
    m = client(cluster(workers=1))
    t = Task("no-such-program-kubevine --flag")
    m.submit(t)
    assert m.wait(30) is t
    assert t.exit_code == 127 and "not found" in t.output


def test_stdout_is_capped(cluster, client) -> None:
    m = client(cluster(workers=1))
    t = Task("head -c 3000000 /dev/zero | tr '\\0' x")
    m.submit(t)
    assert m.wait(30) is t and t.successful()
    assert len(t.output) < 1_100_000 and "truncated" in t.output


def test_status_command_prints_json_whose_numbers_add_up(cluster, client) -> None:
    c = cluster(workers=2)
    m = client(c)
    for i in range(20):
        m.submit(Task(f"echo {i}"))
    while m.wait(30):
        pass
    out = subprocess.run(
        [sys.executable, "-m", "kubevine", "status", c.address, "--json", "--token-file", str(c.token_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    st = json.loads(out)
    assert st["totals"]["submitted"] == 20 and st["totals"]["done"] == 20
    assert len(st["workers"]) == 2 and all(w["resources"]["cores"] == 1 for w in st["workers"])
    human = subprocess.run(
        [sys.executable, "-m", "kubevine", "status", c.address, "--token-file", str(c.token_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "done 20" in human
    assert all(w["id"] in human for w in st["workers"])
