"""What a finished task says, in TaskVine's words: t.result, exit_code, completed(),
successful(), std_output; how files and buffers come back."""

from __future__ import annotations

from pathlib import Path

import pytest

import kubevine as vine

from .conftest import drain


def test_a_command_that_ran_is_success_whatever_its_exit_code(manager) -> None:
    m = manager(workers=1)
    ok, bad = vine.Task("echo hi"), vine.Task("echo no; exit 3")
    m.submit(ok)
    m.submit(bad)
    drain(m)
    assert ok.result == "success" and ok.exit_code == 0 and ok.completed() and ok.successful()
    assert ok.std_output == "hi\n" and ok.output == "hi\n"
    assert bad.result == "success" and bad.exit_code == 3 and bad.completed() and not bad.successful()
    assert bad.result == vine.Result.SUCCESS and vine.VINE_RESULT_SUCCESS == 0
    assert bad.outcome == "exit_nonzero"  # kubevine's finer reason stays available


def test_a_missing_input_file_comes_back_input_missing_with_exit_code_minus_one(
    manager, tmp_path: Path
) -> None:
    m = manager(workers=1)
    t = vine.Task("cat x")
    t.add_input(m.declare_file(tmp_path / "nope", cache=False), "x")
    m.submit(t)  # no exception: TaskVine reports it through wait
    (got,) = drain(m)
    assert got is t and t.result == "input missing" and t.exit_code == -1 and not t.completed()
    assert vine.cvine.VINE_RESULT_INPUT_MISSING == 1


def test_an_output_never_written_is_output_missing_and_not_completed(manager, tmp_path: Path) -> None:
    m = manager(workers=1)
    t = vine.Task("true")
    t.add_output(m.declare_file(tmp_path / "never", cache=False), "never")
    m.submit(t)
    drain(m)
    assert t.result == "output missing" and not t.completed() and not t.successful()


def test_cache_takes_taskvine_booleans() -> None:
    from kubevine.task import cache_level

    assert cache_level(True) == "workflow" and cache_level(False) == "task" and cache_level(None) == "task"
    with pytest.raises(ValueError, match="'always' is not a valid cache level"):
        cache_level("always")


def test_an_empty_buffer_is_an_output_read_with_contents(manager) -> None:
    m = manager(workers=1)
    inbuf, outbuf = m.declare_buffer(b"copy me\n", cache=True), m.declare_buffer()
    t = vine.Task("cat in > out")
    t.add_input(inbuf, "in")
    t.add_output(outbuf, "out")
    m.submit(t)
    drain(m)
    assert t.successful() and outbuf.contents() == inbuf.contents() == b"copy me\n"


def test_fetch_file_gives_text_and_fetch_bytes_bytes(manager) -> None:
    m = manager(workers=1)
    tmp = m.declare_temp()
    t = vine.Task("echo howdy > output")
    t.add_output(tmp, "output")
    m.submit(t)
    drain(m)
    assert m.fetch_file(tmp) == "howdy\n"
    assert m.fetch_bytes(tmp) == b"howdy\n" and tmp.contents() == b"howdy\n"


def test_a_failed_python_task_outputs_a_no_result_and_value_raises(manager) -> None:
    def fails() -> None:
        raise ValueError("on purpose")

    m = manager(workers=1)
    t = vine.PythonTask(fails)
    m.submit(t)
    drain(m)
    out = t.output
    assert isinstance(out, vine.PythonTaskNoResult) and isinstance(out.exception, ValueError)
    assert "on purpose" in str(out) and "fails" in out.remote_traceback
    assert t.result == "success" and t.exit_code == 1 and not t.successful()  # it ran, and raised
    with pytest.raises(ValueError, match="on purpose"):
        _ = t.value


def test_task_keywords_and_inputs_dict(manager, tmp_path: Path) -> None:
    m = manager(workers=1)
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    t = vine.Task("wc -l < data", inputs={m.declare_file(src): "data"}, cores=1, tag="counted")
    m.submit(t)
    drain(m)
    assert t.std_output.strip() == "2" and t.tag == "counted"
    with pytest.raises(TypeError, match="did you mean"):
        vine.Task({"command": "true"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no set_flavour"):
        vine.Task("true", flavour=1)


def test_unlink_when_done_deletes_the_local_file_on_remove_file(manager, tmp_path: Path) -> None:
    m = manager(workers=1)
    p = tmp_path / "hello.txt"
    p.write_text("hello")
    f = m.declare_file(p, unlink_when_done=True)
    keep = m.declare_file(tmp_path / "keep.txt")
    (tmp_path / "keep.txt").write_text("keep")
    m.remove_file(f)
    m.remove_file(keep)
    assert not p.exists() and (tmp_path / "keep.txt").exists()


def test_a_local_file_keeps_its_mode_so_an_executable_runs_and_a_plain_file_does_not(
    manager, tmp_path: Path
) -> None:
    m = manager(workers=1)
    (tmp_path / "tool").write_text("#!/bin/sh\necho ran $1\n")
    (tmp_path / "tool").chmod(0o700)  # the owner's only, as TaskVine's test makes its exec.file
    (tmp_path / "notes").write_text("#!/bin/sh\necho no\n")
    (tmp_path / "notes").chmod(0o644)
    run = vine.Task("./tool twice")
    run.add_input(m.declare_file(str(tmp_path / "tool"), cache=True), "tool")
    plain = vine.Task("./notes")
    plain.add_input(m.declare_file(str(tmp_path / "notes"), cache=True), "notes")
    m.submit(run)
    m.submit(plain)
    drain(m)
    assert (run.result, run.exit_code, run.std_output) == ("success", 0, "ran twice\n")
    assert (plain.result, plain.exit_code) == ("success", 126)


def test_an_output_written_into_a_folder_mounted_as_a_link_comes_back(manager, tmp_path: Path) -> None:
    m = manager(workers=1)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "in.txt").write_text("through the link\n")
    t = vine.Task("cd my_dir && cat in.txt > out.txt")
    t.add_input(m.declare_file(str(tmp_path / "dir"), cache=True), "my_dir", mount_symlink=True)
    t.add_output(m.declare_file(str(tmp_path / "out.txt"), cache=False), "my_dir/out.txt")
    escape = vine.Task("rm my_dir && ln -s / my_dir")  # a link the task made itself is not followed
    escape.add_input(m.declare_file(str(tmp_path / "dir"), cache=True), "my_dir", mount_symlink=True)
    escape.add_output(m.declare_file(str(tmp_path / "passwd"), cache=False), "my_dir/etc/passwd")
    m.submit(t)
    m.submit(escape)
    drain(m)
    assert t.result == "success" and (tmp_path / "out.txt").read_text() == "through the link\n"
    assert escape.result == "output missing" and not (tmp_path / "passwd").exists()
