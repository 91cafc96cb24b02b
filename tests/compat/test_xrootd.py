"""``declare_xrootd`` against a real XRootD server (Debian's xrootd-server; ``make xrootd``
installs it): a root:// file is fetched by a worker with ``xrdcp`` once per node cache and read
by tasks on every worker of the node; a missing file or a server that is down ends the task
with TaskVine's "input missing" and xrdcp's own words; the Coffea example reads its NanoAOD
files as root:// URLs through the workers' cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kubevine as vine
from kubevine import LocalCluster, txformat
from kubevine.task import XROOTD_STAT_TIMEOUT
from kubevine.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class XRootD:
    """A real ``xrootd`` serving ``data`` on 127.0.0.1:``port``, its log read to count opens."""

    def __init__(self) -> None:
        # readable by the server's own user: run as root, xrootd must drop to another (-R nobody),
        # and pytest's tmp_path sits under a folder only its owner may enter
        self.home = Path(tempfile.mkdtemp(prefix="kubevine-xrootd-"))
        self.data = self.home / "data"
        self.data.mkdir()
        self.home.chmod(0o755)
        self.data.chmod(0o755)
        self.run = self.home / "run"
        self.run.mkdir()
        self.run.chmod(0o777)  # its log and admin files, written as nobody
        self.port = _free_port()
        cfg = self.home / "xrootd.cfg"
        cfg.write_text(
            "all.export /\n"
            f"oss.localroot {self.data}\n"
            f"all.adminpath {self.run}/admin\n"
            f"all.pidpath {self.run}/admin\n"
            f"xrd.port {self.port}\n"
            "ofs.trace open\n"
            "xrootd.trace fs\n"
        )
        cfg.chmod(0o644)
        self.log = self.run / "kubevine" / "xrootd.log"  # -n kubevine: logs go in a folder by name
        cmd = ["xrootd", "-c", str(cfg), "-l", str(self.run / "xrootd.log"), "-n", "kubevine"]
        if os.geteuid() == 0:
            cmd += ["-R", "nobody"]
        with open(self.run / "stderr", "wb") as err:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def ready(self) -> bool:
        """Serving: alive, and its log says it listens on its port (not someone else there)."""
        if not self.alive():
            return False
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return f":{self.port} initialization completed" in text

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def put(self, name: str, content: bytes) -> str:
        """Serve ``content`` as /``name``; its root:// URL."""
        path = self.data / name
        path.write_bytes(content)
        path.chmod(0o644)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"root://127.0.0.1:{self.port}//{name}"

    def opens(self, name: str) -> int:
        """How many times a client opened /``name`` to read it (``xrdfs stat`` opens nothing)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(
            1 for line in text.splitlines() if "Xrootd_Protocol: open r" in line and f" /{name}" in line
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def tail(self) -> str:
        lines = []
        for path in (self.run / "stderr", self.log):
            try:
                lines += path.read_text(errors="replace").splitlines()[-15:]
            except OSError:
                pass
        return "\n".join(lines) or "(no log)"


@pytest.fixture
def xrootd() -> Iterator[XRootD]:
    if shutil.which("xrootd") is None or shutil.which("xrdcp") is None:
        pytest.skip("XRootD's server and client are not installed (make xrootd installs them)")
    servers: list[XRootD] = []
    try:
        for _ in range(3):  # a port taken between choosing and binding it: another port
            server = XRootD()
            servers.append(server)
            wait_for(lambda s=server: s.ready() or not s.alive(), 20, what="xrootd to start or exit")
            if server.ready():
                break
            server.stop()
        else:
            pytest.skip(f"xrootd could not be started: {server.tail()}")
        yield server
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture
def node_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two one-core workers of one node: one cache folder shared, as in a worker pod's hostPath."""
    c = LocalCluster(workers=0, workdir=tmp_path / "c")
    c.start()
    try:
        for _ in range(2):
            c.add_worker(cores=1, cache_dir=str(tmp_path / "node-a"), node="a")
        c.wait_for_workers(2)
        yield c
    finally:
        c.stop()


def test_an_xrootd_file_is_fetched_once_per_node_and_read_by_tasks_on_both_workers(
    xrootd: XRootD, node_cluster: LocalCluster, tmp_path: Path
) -> None:
    content = os.urandom(3 << 20)  # 3 MiB: more than one piece for the peer transfer path
    url = xrootd.put("events.bin", content)
    meet = tmp_path / "meet"
    meet.mkdir()
    # each task signs in and waits for the other (a deadline, no sleep-for-luck): so the two run
    # at once, one on each one-core worker
    script = (
        f"touch {meet}/$$; i=0; while [ $(ls {meet} | wc -l) -lt 2 ] && [ $i -lt 600 ]; "
        "do i=$((i+1)); sleep 0.1; done; sha256sum data.bin | cut -d' ' -f1"
    )
    with vine.Manager(node_cluster.address, token=node_cluster.token) as m:
        f = m.declare_xrootd(url)
        assert f.cache_name() == m.declare_xrootd(url).cache_name()  # named by URL, size and time
        tasks = []
        for _ in range(2):
            t = vine.Task(script)
            t.add_input(f, "data.bin")
            t.set_cores(1)
            m.submit(t)
            tasks.append(t)
        for _ in tasks:
            assert m.wait(90) is not None
    import hashlib

    want = hashlib.sha256(content).hexdigest()
    for t in tasks:
        assert t.successful(), (t.result, t.error)
        assert t.output is not None and t.output.strip() == want
    assert len({t.worker for t in tasks}) == 2, [t.worker for t in tasks]
    assert xrootd.opens("events.bin") == 1, xrootd.tail()  # one xrdcp for the node, not one per worker


def test_another_node_gets_the_xrootd_file_from_a_peer_not_from_the_server_again(
    xrootd: XRootD, tmp_path: Path
) -> None:
    content = os.urandom(1 << 20)
    url = xrootd.put("shared.bin", content)
    meet = tmp_path / "meet"
    meet.mkdir()
    script = (
        f"touch {meet}/$$; i=0; while [ $(ls {meet} | wc -l) -lt 2 ] && [ $i -lt 600 ]; "
        "do i=$((i+1)); sleep 0.1; done; wc -c < data.bin"
    )
    c = LocalCluster(workers=0, workdir=tmp_path / "c")
    c.start()
    try:
        c.add_worker(cores=1, cache_dir=str(tmp_path / "node-a"), node="a")
        c.wait_for_workers(1)
        with vine.Manager(c.address, token=c.token) as m:
            f = m.declare_xrootd(url)
            first = vine.Task("wc -c < data.bin")
            first.add_input(f, "data.bin")
            m.submit(first)
            assert m.wait(60) is first and first.successful(), (first.result, first.error)
            assert xrootd.opens("shared.bin") == 1
            c.add_worker(cores=1, cache_dir=str(tmp_path / "node-b"), node="b")
            c.wait_for_workers(2)
            tasks = []
            for _ in range(2):  # both at once: one of them on node b
                t = vine.Task(script)
                t.add_input(f, "data.bin")
                t.set_cores(1)
                m.submit(t)
                tasks.append(t)
            for _ in tasks:
                assert m.wait(90) is not None
    finally:
        c.stop()
    for t in tasks:
        assert t.successful() and t.output is not None and t.output.strip() == str(len(content)), t.error
    assert len({t.worker for t in tasks}) == 2
    assert xrootd.opens("shared.bin") == 1, xrootd.tail()  # node b's copy came from node a
    log = txformat.read(c.workdir / "manager" / "transactions.log")  # complete: the cluster stopped
    sent = [e.get("source") for e in log if e.kind == "TRANSFER" and e.event == "sent"]
    assert sent.count("url") == 1 and "peer" in sent, sent


def test_a_missing_xrootd_file_fails_its_task_as_input_missing_with_xrdcps_words(
    xrootd: XRootD, tmp_path: Path
) -> None:
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, vine.Manager(c.address, token=c.token) as m:
        t = vine.Task("cat data.bin")
        t.add_input(m.declare_xrootd(xrootd.url("no/such/file.root")), "data.bin")
        m.submit(t)
        assert m.wait(60) is t
    assert t.result == "input missing" and not t.successful()
    assert t.error is not None
    assert "xrdcp root://" in t.error and "no such file" in t.error.lower(), t.error
    assert xrootd.opens("no/such/file.root") == 1


def test_an_xrootd_server_that_is_down_fails_its_task_clearly_and_quickly(
    xrootd: XRootD, tmp_path: Path
) -> None:
    url = xrootd.put("later.bin", b"x")
    xrootd.stop()  # nothing listens on its port any more
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, vine.Manager(c.address, token=c.token) as m:
        # the client's `xrdfs stat` (its validators) tries the server once, as the worker's
        # xrdcp does: the declare does not wait out XRootD's retries (minutes) nor the stat's
        # own timeout
        started = time.monotonic()
        f = m.declare_xrootd(url)
        assert time.monotonic() - started < XROOTD_STAT_TIMEOUT / 2
        t = vine.Task("cat data.bin")
        t.add_input(f, "data.bin")
        m.submit(t)
        assert m.wait(20) is t  # xrdcp tries the server once, not for minutes
    assert t.result == "input missing"
    assert t.error is not None and "xrdcp root://" in t.error and "failed (exit" in t.error, t.error
    print(t.error)


def test_the_coffea_example_reads_root_urls_through_the_workers_cache(xrootd: XRootD, tmp_path: Path) -> None:
    pytest.importorskip("coffea")
    # tests/dask's own helper, by path: `tests` is a package only when pytest runs from the root.
    spec = importlib.util.spec_from_file_location("nanoaod", ROOT / "tests" / "dask" / "nanoaod.py")
    assert spec is not None and spec.loader is not None
    nanoaod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nanoaod)
    write_nanoaod = nanoaod.write_nanoaod

    write_nanoaod(xrootd.data / "nano.root")
    (xrootd.data / "nano.root").chmod(0o644)
    png = tmp_path / "met.png"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "coffea_met.py"),
            xrootd.url("nano.root"),
            "--steps-per-file",
            "4",
            "--output",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MET histogram: 2000 events from 1 file(s) in 4 partitions" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert xrootd.opens("nano.root") == 1, xrootd.tail()  # once for the node's cache, not per partition


def test_a_worker_without_xrdcp_fails_the_task_saying_what_to_install(
    xrootd: XRootD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(bare))  # the manager and the worker find no XRootD tools
    url = xrootd.put("there.bin", b"data")
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, vine.Manager(c.address, token=c.token) as m:
        t = vine.Task("read x < data.bin")
        t.add_input(m.declare_xrootd(url), "data.bin")
        m.submit(t)
        assert m.wait(60) is t
    assert t.result == "input missing"
    assert t.error is not None and "xrdcp (XRootD's client) is not installed" in t.error, t.error
    assert xrootd.opens("there.bin") == 0


def test_a_copy_that_stops_making_progress_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubevine.worker import xrootd as worker_xrootd

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "xrdcp").write_text("#!/bin/sh\necho connecting >&2\nexec sleep 60\n")
    (fake / "xrdcp").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    t0 = time.monotonic()
    with pytest.raises(worker_xrootd.XrdcpError, match=r"no progress in 1s, stopped \(connecting\)"):
        worker_xrootd.xrdcp("root://127.0.0.1:1//f", tmp_path / "out", stall=1.0)
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "out.stderr").exists()


def test_a_proxy_and_an_environment_are_handed_to_xrdcp_and_a_renewed_proxy_fetches_again(
    xrootd: XRootD, tmp_path: Path
) -> None:
    """``declare_xrootd(url, proxy=..., env=...)``, as TaskVine's analyses call it: the fetch
    runs the environment's ``xrdcp`` (here a wrapper that writes down the credential it was
    given, then runs the real client) with the declared proxy, private to its user, in
    ``$X509_USER_PROXY``; a renewed proxy is another file, fetched again."""
    content = os.urandom(1 << 20)
    url = xrootd.put("secured.bin", content)
    seen = tmp_path / "seen"
    seen.mkdir()
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    real = shutil.which("xrdcp")
    assert real is not None
    wrapper = env_dir / "bin" / "xrdcp"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'stat -c %a "$X509_USER_PROXY" > {seen}/mode.$$\n'
        f'cat "$X509_USER_PROXY" > {seen}/proxy.$$\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    tarball = tmp_path / "xrootd-env.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(env_dir), "."], check=True)
    proxies = [tmp_path / "x509up_a", tmp_path / "x509up_b"]
    for i, p in enumerate(proxies):
        p.write_text(f"-----BEGIN CERTIFICATE-----\nproxy number {i}\n-----END CERTIFICATE-----\n")
        p.chmod(0o644)  # as a careless copy leaves it: the fetch makes it private
    with LocalCluster(workers=1, workdir=tmp_path / "c") as c, vine.Manager(c.address, token=c.token) as m:
        env = m.declare_poncho(tarball)
        files = [m.declare_xrootd(url, proxy=m.declare_file(p), env=env) for p in proxies]
        assert files[0].cache_name() != files[1].cache_name()  # a renewed proxy: another file
        assert (
            files[0].cache_name()
            == m.declare_xrootd(url, proxy=m.declare_file(proxies[0]), env=env).cache_name()
        )
        tasks = []
        for f in [files[0], files[0], files[1]]:
            t = vine.Task("sha256sum data.bin | cut -d' ' -f1")
            t.add_input(f, "data.bin")
            m.submit(t)
            assert m.wait(60) is t  # one after the other: the second finds the first's copy
            tasks.append(t)
    import hashlib

    for t in tasks:
        assert t.successful(), (t.result, t.error)
        assert t.output is not None and t.output.strip() == hashlib.sha256(content).hexdigest()
    given = sorted(p.read_text() for p in seen.glob("proxy.*"))
    assert given == sorted(p.read_text() for p in proxies)  # each proxy presented once
    assert {p.read_text().strip() for p in seen.glob("mode.*")} == {"600"}
    assert xrootd.opens("secured.bin") == 2, xrootd.tail()  # once per proxy, not per task


def test_declare_xrootd_refuses_an_env_that_is_not_a_packed_environment() -> None:
    from kubevine.task import declare_buffer, declare_xrootd_fetch

    with pytest.raises(ValueError, match="declare_poncho"):
        declare_xrootd_fetch("root://127.0.0.1:1//f", None, declare_buffer(b"none", "workflow"), "workflow")
