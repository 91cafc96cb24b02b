"""set_retries: a failing attempt is retried; when retries run out the last failure stands."""

from __future__ import annotations

from pathlib import Path

from kubevine import Task


def test_a_task_that_fails_twice_then_succeeds_ends_successful(cluster, client, tmp_path: Path) -> None:
    m = client(cluster(workers=2))
    counter = tmp_path / "attempts"
    counter.write_text("")
    # each attempt appends a line; the third attempt succeeds
    t = Task(f'echo x >> {counter}; n=$(wc -l < {counter}); echo "attempt $n"; [ "$n" -ge 3 ]')
    t.set_retries(3)
    m.submit(t)
    assert m.wait(60) is t
    assert t.successful() and t.attempts == 3
    assert t.output == "attempt 3\n"
    assert len(counter.read_text().splitlines()) == 3


def test_a_task_that_always_fails_ends_failed_with_its_last_exit_code_and_output(
    cluster, client, tmp_path: Path
) -> None:
    m = client(cluster(workers=2))
    counter = tmp_path / "attempts"
    counter.write_text("")
    t = Task(f'echo x >> {counter}; n=$(wc -l < {counter}); echo "attempt $n failed"; exit $((10 + n))')
    t.set_retries(2)
    m.submit(t)
    assert m.wait(60) is t
    assert t.state == "failed" and not t.successful() and t.completed()
    assert t.attempts == 3 and t.exit_code == 13 and t.output == "attempt 3 failed\n"


def test_without_retries_a_failure_is_final(cluster, client, tmp_path: Path) -> None:
    m = client(cluster(workers=1))
    t = Task("exit 1")
    m.submit(t)
    assert m.wait(30) is t and t.attempts == 1 and t.state == "failed"
