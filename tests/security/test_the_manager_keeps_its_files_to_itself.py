"""What the manager writes is for its own user: client files, the transactions log (which
names every file and task) and its working folder are not readable by other local users."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from kubevine import Manager, Task, auth


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_workdir_its_files_and_the_transactions_log_are_private(tmp_path: Path) -> None:
    token = auth.generate_token()
    token_file = auth.write_token(tmp_path / "token", token)
    workdir = tmp_path / "manager"  # made by the manager
    cmd = [sys.executable, "-m", "kubevine", "--log-level", "WARNING", "manager", "--port", "0"]
    cmd += ["--host", "127.0.0.1", "--workdir", str(workdir), "--token-file", str(token_file)]
    old = os.umask(0o022)  # a usual umask: what the manager makes must not depend on it
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    finally:
        os.umask(old)
    try:
        address = workdir / "address"
        deadline = time.monotonic() + 30
        while not (address.exists() and address.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "the manager did not start"
            time.sleep(0.05)
        with Manager(address.read_text().strip(), token=token) as m:
            t = Task("true")  # no worker: it just waits; its input reaches the manager's store
            t.add_input(m.declare_buffer(b"a secret"), "in")
            m.submit(t)
            files = workdir / "files"
            deadline = time.monotonic() + 30
            while not [p for p in files.iterdir() if p.name.startswith("buf-")]:
                assert time.monotonic() < deadline, "the file never reached the manager"
                time.sleep(0.05)
        stored = next(p for p in files.iterdir() if p.name.startswith("buf-"))
        assert mode(workdir) == 0o700, oct(mode(workdir))
        assert mode(files) == 0o700, oct(mode(files))
        assert mode(stored) == 0o600, oct(mode(stored))
        assert mode(workdir / "transactions.log") == 0o600, oct(mode(workdir / "transactions.log"))
        for p in workdir.rglob("*"):  # nothing in it is readable or writable by others
            assert not mode(p) & 0o077, (p, oct(mode(p)))
    finally:
        proc.terminate()
        proc.wait(10)
