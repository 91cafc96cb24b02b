"""A client holding the token cannot crash the manager or a worker with a name.

Cache names become file names in the manager's file store and every worker's cache; remote
names become paths in sandboxes. Before they were checked, `put_files` with the cache name
`buf-a/b` (or 300 characters, or a NUL) killed the manager; an input cache name with a `/`
killed every worker its task reached (requeued from one to the next); an input named
`../../x` was linked outside the sandbox and an output named `/etc/hostname` was sent to the
client. Now the message is refused where it is read, its sender is told why, and nothing
else notices.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevine.protocol import ErrorMsg, FileBinding, FileKind, FileMeta, PutFiles, Submit, TaskSpec

from .conftest import still_serves


@pytest.mark.parametrize("name", ["buf-a/b", "b" * 300, "buf-\x00x", "../evil", ".lock", ""])
def test_put_files_with_a_bad_cache_name_is_refused_and_the_manager_lives(cluster, raw, name: str) -> None:
    c = cluster(workers=1)
    p = raw(c.address)
    assert p.hello(c.token).type == "welcome"
    p.send(
        PutFiles.model_construct(files=[FileMeta.model_construct(cache_name=name, size=3, frame=0)]), [b"abc"]
    )
    err = p.expect("error")
    assert isinstance(err, ErrorMsg) and err.code == "malformed" and "cache_name" in err.message
    still_serves(c)
    assert not any((c.workdir / "manager").rglob("evil"))


def _submit_one(p, first: int, **spec: object) -> ErrorMsg:
    p.send(Submit.model_construct(tasks=[TaskSpec.model_construct(id=first, **spec)]))
    err = p.expect("error", "results")
    assert isinstance(err, ErrorMsg), err
    return err


def test_a_task_with_a_slash_in_an_input_cache_name_reaches_no_worker(cluster, raw) -> None:
    c = cluster(workers=2)
    p = raw(c.address)
    welcome = p.hello(c.token)
    bad = FileBinding.model_construct(cache_name="file-a/b", remote_name="in", kind=FileKind.LOCAL)
    err = _submit_one(p, welcome.first_task_id, command="cat in", inputs=[bad])
    assert err.code == "malformed" and "cache_name" in err.message
    still_serves(c, workers=2)  # both workers are still there


@pytest.mark.parametrize(
    ("where", "remote"),
    [
        ("inputs", "../../x"),
        ("inputs", "/etc/passwd"),
        ("outputs", "/etc/hostname"),
        ("outputs", "a/../../b"),
    ],
)
def test_remote_names_outside_the_sandbox_are_refused(
    cluster, raw, tmp_path: Path, where: str, remote: str
) -> None:
    c = cluster(workers=1)
    p = raw(c.address)
    welcome = p.hello(c.token)
    b = FileBinding.model_construct(
        cache_name="buf-" + "0" * 64 if where == "inputs" else None,
        remote_name=remote,
        kind=FileKind.BUFFER if where == "inputs" else FileKind.TEMP,
        to_client=where == "outputs",
    )
    err = _submit_one(p, welcome.first_task_id, command="true", **{where: [b]})
    assert err.code == "malformed" and "remote name" in err.message
    still_serves(c, workers=1)


def test_the_python_client_refuses_the_same_names_before_anything_is_sent(tmp_path: Path) -> None:
    from kubevine import Task
    from kubevine.task import declare_buffer

    t = Task("true")
    for remote in ("../x", "/abs", "", "a/../../b", "x\x00y"):
        with pytest.raises(ValueError, match="remote name"):
            t.add_input(declare_buffer(b"x", "workflow"), remote)
