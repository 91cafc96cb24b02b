"""The ``kubevine`` command: ``manager``, ``worker``, ``status``, ``report``, ``drain-local``.

Every subcommand takes the workflow token the same way (``--token-file F`` or the
environment variable ``KUBEVINE_TOKEN``) and logs as text or, with ``--log-format json``,
as JSON lines. This module only parses arguments and prints; the work is elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias, TypeVar

from kubevine import auth, gctune, logs
from kubevine.protocol import DEFAULT_PORT

log = logging.getLogger("kubevine")
T = TypeVar("T")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token-file", help="file holding the workflow token (else $KUBEVINE_TOKEN)")
    _logging_options(p, argparse.SUPPRESS)


def _logging_options(p: argparse.ArgumentParser, default: object) -> None:
    """--log-level/--log-format, accepted before or after the subcommand."""
    p.add_argument(
        "--log-level",
        default=default if default is argparse.SUPPRESS else os.environ.get("KUBEVINE_LOG_LEVEL", "INFO"),
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=default if default is argparse.SUPPRESS else os.environ.get("KUBEVINE_LOG_FORMAT", "text"),
    )


def _positive_int(text: str) -> int:
    n = _nonneg_int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be 1 or more")
    return n


def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} must be 0 or more")
    return n


def _env(name: str, default: str | None) -> str | None:
    """``$name`` (or ``default``) as a string default, so argparse validates it with the option's
    ``type=`` like a command-line value; a bad value names the variable in the error."""
    return os.environ.get(name) or default


def _from_env(name: str, convert: Callable[[str], T]) -> Callable[[str], T]:
    """``convert`` whose error message says the bad value may have come from ``$name``."""

    def checked(text: str) -> T:
        try:
            return convert(text)
        except (ValueError, argparse.ArgumentTypeError) as e:
            detail = str(e) if isinstance(e, argparse.ArgumentTypeError) else f"{text!r} is not a number"
            raise argparse.ArgumentTypeError(f"{detail} (from the option or ${name})") from None

    checked.__name__ = getattr(convert, "__name__", "value")
    return checked


def _nonneg_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{x} must be a finite number of seconds, 0 or more")
    return x


def _positive_float(text: str) -> float:
    x = _nonneg_float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{x} must be more than 0 seconds")
    return x


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a port number (0-65535)")
    return n


_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kubevine", description=__doc__.split("\n")[0])
    _logging_options(ap, None)
    sub = ap.add_subparsers(dest="command", required=True)
    _manager_parser(sub)
    _worker_parser(sub)
    _status_parser(sub)
    _report_parser(sub)
    sub.add_parser(
        "operator", help="run the Kubernetes operator (see kubevine operator --help)", add_help=False
    )

    _drain_parser(sub)
    return ap


def _manager_parser(sub: _Subparsers) -> None:
    """``kubevine manager``: its options mirror ``$KUBEVINE_*`` variables where a pod sets them."""
    m = sub.add_parser("manager", help="run a manager service")
    _common(m)
    m.add_argument("--name", default=os.environ.get("KUBEVINE_WORKFLOW", "default"), help="workflow name")
    m.add_argument("--host", default=os.environ.get("KUBEVINE_BIND_HOST", "0.0.0.0"), help="address to bind")
    m.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    m.add_argument(
        "--redis", default=os.environ.get("KUBEVINE_REDIS_URL"), help="Redis URL for durable state"
    )
    m.add_argument("--workdir", default=None, help="directory for files, logs and the address file")
    m.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="seconds (default: 2, or a quarter of the timeout)",
    )
    m.add_argument(
        "--heartbeat-timeout", type=float, default=30.0, help="seconds before a silent worker is lost"
    )
    m.add_argument("--lease-ttl", type=float, default=15.0, help="seconds a dead manager's lease outlives it")
    m.add_argument(
        "--recover-grace", type=float, default=30.0, help="seconds a restarted manager waits for workers"
    )
    m.add_argument(
        "--redis-outage-grace",
        type=_from_env("KUBEVINE_REDIS_OUTAGE_GRACE", _nonneg_float),
        default=_env("KUBEVINE_REDIS_OUTAGE_GRACE", "60"),
        help="seconds the manager runs on while Redis is unreachable before it refuses new work",
    )
    m.add_argument(
        "--restore-at-once",
        type=_from_env("KUBEVINE_RESTORE_AT_ONCE", _nonneg_int),
        default=_env("KUBEVINE_RESTORE_AT_ONCE", "50000"),
        help="a restarted manager loads a store of up to this many tasks before it serves; "
        "a larger one in slices while it serves, so the first dispatch need not wait for all",
    )
    m.add_argument(
        "--metrics-port",
        type=_from_env("KUBEVINE_METRICS_PORT", _port),
        default=_env("KUBEVINE_METRICS_PORT", None),
        help="serve /metrics (Prometheus) and /healthz over HTTP on this port (0: any free port)",
    )
    m.add_argument(
        "--stats-interval",
        type=_from_env("KUBEVINE_STATS_INTERVAL", _positive_float),
        default=_env("KUBEVINE_STATS_INTERVAL", "2"),
        help="seconds between performance snapshots (status, /metrics, the transactions log)",
    )
    m.add_argument(
        "--transfers-per-source",
        type=_from_env("KUBEVINE_TRANSFERS_PER_SOURCE", _positive_int),
        default=_env("KUBEVINE_TRANSFERS_PER_SOURCE", "4"),
        help="files one worker, the manager or a URL sends at once; more wait for a free source",
    )
    m.add_argument(
        "--encrypt",
        action=argparse.BooleanOptionalAction,
        default=auth.encrypt_from_env(),
        help="encrypt every connection with ZeroMQ CURVE (keys derived from the token); clients and "
        f"workers must encrypt too (default: ${auth.ENCRYPT_ENV})",
    )
    m.add_argument(
        "--transactions-stdout",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("KUBEVINE_TRANSACTIONS_STDOUT", "") in ("1", "true", "yes"),
        help="also write the transactions log to stdout (JSON lines with --log-format json)",
    )


def _worker_parser(sub: _Subparsers) -> None:
    """``kubevine worker HOST:PORT``."""
    w = sub.add_parser("worker", help="run a worker connected to a manager")
    _common(w)
    w.add_argument(
        "manager",
        nargs="+",
        metavar="HOST:PORT",
        help="the manager: HOST:PORT, or HOST PORT as TaskVine's workers",
    )
    w.add_argument("--cores", type=float, default=os.cpu_count() or 1)
    w.add_argument("--memory", type=int, default=4096, help="MB")
    w.add_argument("--disk", type=int, default=16384, help="MB")
    w.add_argument("--gpus", type=int, default=0)
    w.add_argument("--workdir", default=None, help="sandboxes live here")
    w.add_argument("--cache-dir", default=None, help="file cache (may be shared by workers of a node)")
    w.add_argument("--node", default=os.environ.get("KUBEVINE_NODE_NAME") or socket.gethostname())
    w.add_argument("--worker-id", default=os.environ.get("KUBEVINE_WORKER_ID"))
    w.add_argument(
        "--idle-timeout", type=float, default=0.0, help="leave after this many idle seconds (0: never)"
    )
    w.add_argument(
        "--connect-timeout",
        "--timeout",
        "-t",
        type=float,
        default=0.0,
        help="give up if no manager answers for this long (0: never; --timeout is TaskVine's name)",
    )
    w.add_argument(
        "--unlink-token-file",
        action="store_true",
        help="remove --token-file once read (give the worker its own copy): tasks cannot read it",
    )
    w.add_argument(
        "--encrypt",
        "--ssl",
        action=argparse.BooleanOptionalAction,
        default=auth.encrypt_from_env(),
        help="encrypt every connection (ZeroMQ CURVE; default $KUBEVINE_ENCRYPT; --ssl is TaskVine's name)",
    )
    w.add_argument(
        "--single-shot", action="store_true", help="exit once the manager it was connected to goes away"
    )
    w.add_argument(
        "--feature", action="append", default=[], metavar="NAME", help="a feature tasks may require"
    )
    w.add_argument(
        "-d", "--debug", nargs="?", const="all", default=None, metavar="FLAGS", help="debug logging"
    )
    w.add_argument("-o", "--debug-file", default=None, help="write the debug log to this file")
    w.add_argument(
        "--python-tasks",
        choices=["fork", "exec"],
        default="fork",
        help="start each PythonTask forked from a clean, pre-started interpreter (fork, fast) "
        "or as a new interpreter (exec)",
    )


def _status_parser(sub: _Subparsers) -> None:
    """``kubevine status [HOST:PORT]``."""
    s = sub.add_parser("status", help="show a manager's tasks and workers")
    _common(s)
    s.add_argument(
        "manager", nargs="?", default=os.environ.get("KUBEVINE_MANAGER", f"127.0.0.1:{DEFAULT_PORT}")
    )
    s.add_argument("--json", action="store_true", help="print the raw status as JSON")
    s.add_argument("--timeout", type=float, default=10.0)
    s.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted; with --json, one object a line",
    )
    s.add_argument("--count", type=int, default=None, help="with --watch: stop after this many updates")


def _report_parser(sub: _Subparsers) -> None:
    """``kubevine report LOG -o run.html``."""
    r = sub.add_parser("report", help="draw a run from its transactions log (HTML or PNG)")
    _logging_options(r, argparse.SUPPRESS)
    r.add_argument("logfile", help="a transactions.log written by a manager")
    r.add_argument(
        "-o", "--output", action="append", required=True, help="run.html or run.png (may be repeated)"
    )
    r.add_argument("--title", default=None, help="title of the picture (default: the workflow name)")
    r.add_argument("--width", type=float, default=14.0, help="PNG width in inches (at 100 dpi)")


def _drain_parser(sub: _Subparsers) -> None:
    """``kubevine drain-local --workdir DIR``."""
    d = sub.add_parser("drain-local", help="ask the worker running in --workdir to drain, and wait")
    _logging_options(d, argparse.SUPPRESS)
    d.add_argument("--workdir", required=True)
    d.add_argument("--timeout", type=float, default=300.0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    operator_argv = _operator_argv(argv)
    if operator_argv is not None:  # the operator parses its own options (kopf's among them)
        from kubevine.operator.run import main as operator_main

        return operator_main(operator_argv)
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        if args.command == "manager":
            return _manager(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "status":
            return _status(args)
        if args.command == "report":
            return _report(args)
        if args.command == "drain-local":
            return _drain_local(args)
    except auth.TokenError as e:
        log.error("%s", e)
        return 2
    return 2


_GLOBAL_OPTIONS = ("--log-level", "--log-format")


def _operator_argv(argv: list[str]) -> list[str] | None:
    """The operator's arguments when the subcommand is ``operator`` (the global
    ``--log-level``/``--log-format`` given before it passed on), else None."""
    passed: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_OPTIONS and i + 1 < len(argv):
            passed += argv[i : i + 2]
            i += 2
        elif arg.split("=", 1)[0] in _GLOBAL_OPTIONS:
            passed.append(arg)
            i += 1
        else:
            return [*passed, *argv[i + 1 :]] if arg == "operator" else None
    return None


def _manager(args: argparse.Namespace) -> int:
    from kubevine.manager.service import ManagerConfig, ManagerService
    from kubevine.manager.store import StoreError

    os.umask(0o077)  # the manager's files (client data, its log, the token) are its user's alone
    workdir = Path(args.workdir or f"kubevine-manager-{args.name}").absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    token = auth.load_token(args.token_file)
    if token is None:
        token = auth.generate_token()
        path = auth.write_token(workdir / "token", token)
        log.info("no token given: generated one in %s (readable by its owner only)", path)
    auth.check_token(token, args.token_file or f"${auth.ENV}")
    cfg = ManagerConfig(
        name=args.name,
        host=args.host,
        port=args.port,
        token=token,
        encrypt=args.encrypt,
        workdir=workdir,
        redis_url=args.redis,
        redis_password=os.environ.get("KUBEVINE_REDIS_PASSWORD") or None,
        heartbeat_interval=args.heartbeat_interval or min(2.0, args.heartbeat_timeout / 4),
        heartbeat_timeout=args.heartbeat_timeout,
        recover_grace=args.recover_grace,
        lease_ttl=args.lease_ttl,
        redis_outage_grace=args.redis_outage_grace,
        restore_at_once=args.restore_at_once,
        metrics_port=args.metrics_port,
        stats_interval=args.stats_interval,
        transfers_per_source=args.transfers_per_source,
        transactions_stdout=args.transactions_stdout,
        transactions_json=args.log_format == "json",
    )
    gctune.for_service()
    try:
        ManagerService(cfg).serve_forever()
    except StoreError as e:
        log.error("manager cannot run: %s", e)
        return 3
    return 0


def _worker(args: argparse.Namespace) -> int:
    from kubevine.worker.service import WorkerConfig, WorkerRefused, WorkerService

    manager = _manager_address(args.manager)
    host, _, port = manager.rpartition(":")
    from kubevine.worker import hardening

    _worker_debug(args.debug, args.debug_file)
    token = hardening.take_token(args.token_file, unlink=args.unlink_token_file)
    token = token or auth.published_token(host, int(port))
    if token is None:
        raise auth.TokenError("a worker needs the workflow token: --token-file F or $KUBEVINE_TOKEN")
    workdir = Path(args.workdir or f"kubevine-worker-{os.getpid()}").absolute()
    cfg = WorkerConfig(
        manager=manager,
        token=token,
        cores=args.cores,
        memory=args.memory,
        disk=args.disk,
        gpus=args.gpus,
        workdir=workdir,
        cache_dir=Path(args.cache_dir).absolute() if args.cache_dir else None,
        node=args.node,
        worker_id=args.worker_id,
        idle_timeout=args.idle_timeout,
        connect_timeout=args.connect_timeout,
        python_fork=args.python_tasks == "fork",
        encrypt=args.encrypt,
        single_shot=args.single_shot,
        features=list(args.feature),
    )
    gctune.for_service()
    try:
        service = WorkerService(cfg)
        logs.bind(worker=service.worker_id)
        return service.serve_forever()
    except WorkerRefused as e:
        log.error("the manager refused this worker: %s", e)
        return 3


def _worker_debug(flags: str | None, path: str | None) -> None:
    """TaskVine's ``-d FLAGS``/``-o FILE``: debug logging (to that file when given)."""
    if flags is None and path is None:
        return
    root = logging.getLogger()
    for logger in (root, log):
        logger.setLevel(logging.DEBUG)
    if path is not None:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    log.debug("debug logging on (%s)%s", flags or "all", f" to {path}" if path else "")


def _manager_address(parts: list[str]) -> str:
    """``HOST:PORT`` or TaskVine's two arguments ``HOST PORT``."""
    if len(parts) == 2 and parts[1].isdigit():
        return f"{parts[0]}:{parts[1]}"
    if len(parts) == 1 and ":" in parts[0]:
        return parts[0]
    raise auth.TokenError(f"the manager is HOST:PORT or HOST PORT, not {' '.join(parts)!r}")


def _status(args: argparse.Namespace) -> int:
    from kubevine.admin import Admin, AdminError
    from kubevine.cli import statusview

    token = auth.load_token(args.token_file)
    if token is None:
        raise auth.TokenError("status needs the workflow token: --token-file F or $KUBEVINE_TOKEN")
    admin = Admin(args.manager, token, timeout=args.timeout)
    if args.watch is not None:
        return statusview.watch(admin.status, args.watch, as_json=args.json, count=args.count)
    try:
        st = admin.status()
    except AdminError as e:
        log.error("%s", e)
        return 1
    print(st.model_dump_json(indent=2) if args.json else statusview.render(st))
    return 0


def _report(args: argparse.Namespace) -> int:
    from kubevine import report

    try:
        run = report.load(args.logfile)
    except OSError as e:
        log.error("cannot read %s: %s", args.logfile, e)
        return 1
    for out in args.output:
        try:
            report.render(run, out, title=args.title, width=args.width)
        except ValueError as e:
            log.error("%s", e)
            return 2
        print(f"{out}: {len(run.tasks)} tasks, {len(run.workers)} workers, {run.duration:.1f}s")
    return 0


def _drain_local(args: argparse.Namespace) -> int:
    import signal

    pid_file = Path(args.workdir) / "worker.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        log.error("no worker pid in %s", pid_file)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.2)
    log.error("the worker (pid %d) did not exit within %gs", pid, args.timeout)
    return 1
