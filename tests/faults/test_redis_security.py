"""Redis credentials and TLS: a manager reaches a TLS-only Redis (``rediss://``) as an ACL
user, or a password-protected one with the password from ``KUBEVINE_REDIS_PASSWORD``; a wrong
password is a clear start-up error. Nothing secret — the workflow token, the Redis password —
appears in any log of the run (manager, workers, the transactions log, debug level on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubevine import Manager, Task, keys

from .procs import TOKEN, Procs, RedisServer, kubevine_env

PASSWORD = "rpw-7d41e9c0b2"  # distinctive, to grep for


def make_certs(d: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    d.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubevine-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt",
    )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "s.csr",
    )  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", "s.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "ext.cnf", "-out", "server.crt",
    )  # fmt: skip
    return d


def run_workflow(tmp: Path, url: str, env: dict[str, str], name: str) -> None:
    procs = Procs(tmp)
    try:
        address = procs.manager(url, name, "--log-level", "DEBUG", env=env)
        procs.worker(address, 0, env={**kubevine_env(), "KUBEVINE_LOG_LEVEL": "DEBUG"})
        with Manager(address, token=TOKEN, client="c") as m:
            tasks = [Task(f"echo {i}") for i in range(20)]
            for t in tasks:
                m.submit(t)
            assert len(list(m)) == 20
        assert [t.output for t in tasks] == [f"{i}\n" for i in range(20)]
    finally:
        procs.stop()


def assert_no_secrets(tmp: Path) -> None:
    logs = [p for p in tmp.rglob("*") if p.is_file() and p.suffix in (".log",)]
    assert any(p.name == "transactions.log" for p in logs) and any(p.name.startswith("manager") for p in logs)
    for p in logs:
        text = p.read_text(errors="replace")
        assert TOKEN not in text, p
        assert PASSWORD not in text, p


def test_tls_redis_as_an_acl_user(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    rs = RedisServer(tmp_path / "redis", user="kubevine", password=PASSWORD, tls=certs)
    rs.start()
    try:
        assert rs.url.startswith("rediss://kubevine:")
        run_workflow(tmp_path / "run", rs.url, kubevine_env(), "tls")
        assert "state: redis at rediss://***@127.0.0.1" in (tmp_path / "run" / "manager-0.log").read_text()
        r = rs.client()
        assert r.get(keys.epoch("tls")) is not None  # the state went to this Redis, over TLS
        r.close()
    finally:
        rs.stop()
    assert_no_secrets(tmp_path / "run")


def test_password_from_the_environment_and_a_wrong_one_refused_clearly(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis", password=PASSWORD)
    rs.start()
    plain = f"redis://127.0.0.1:{rs.port}/0"
    try:
        run_workflow(tmp_path / "run", plain, kubevine_env(KUBEVINE_REDIS_PASSWORD=PASSWORD), "pw")
        args = [sys.executable, "-m", "kubevine", "manager", "--port", "0", "--name", "pw", "--redis", plain]
        args += ["--workdir", str(tmp_path / "wrong")]
        env = kubevine_env(KUBEVINE_REDIS_PASSWORD="not-" + PASSWORD)
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 3
        assert "manager cannot run" in out.stderr and "password" in out.stderr.lower()
        assert PASSWORD not in out.stderr + out.stdout
    finally:
        rs.stop()
    assert_no_secrets(tmp_path / "run")
