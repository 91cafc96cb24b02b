"""Run TaskVine Python programs on kubevine with only the import changed, and count.

Why: kubevine claims a TaskVine program ports by changing ``ndcctools.taskvine`` to
``kubevine``. This runs a folder of such programs the way cctools' own test drivers run them
and prints a table (script, result, reason), so the claim is checked rather than assumed — on
TaskVine's own tests and examples, or on a user's scripts before they move.

For each ``*.py`` in the folders that imports ``ndcctools.taskvine``:

- a copy goes into a fresh temporary folder with ``ndcctools.taskvine`` replaced by ``kubevine``
  (``import ndcctools.taskvine as vine`` -> ``import kubevine as vine``, ``from
  ndcctools.taskvine.utils import X`` -> ``from kubevine.utils import X``); nothing else changes;
- when the folder holds its cctools driver (``TR_<name>.sh``), the driver itself is run
  (``check_needed``, ``prepare``, ``run``) beside a stand-in for cctools'
  ``dttools/test/test_runner_common.sh`` written here: the same helpers, with TaskVine's worker
  replaced by ``kubevine worker`` and the same options (``--single-shot --timeout=10 --cores 1
  --memory 250 --disk 250 --gpus 0`` unless the driver says otherwise). The driver's exit status
  is the result;
- otherwise (the examples, a user's script) the script is started with no arguments (a test
  script that reads its port file from ``sys.argv[1]`` is given ``vine.port``, as its driver
  would); once it prints a port (``... port 9123``) or writes the port file, workers are
  started against it as a user would (``kubevine worker --single-shot localhost PORT``, with
  ``--ssl`` when the script asks for ``ssl=True``; as many as it waits for with
  ``tune("wait-for-workers", n)``; none when it starts its own with a ``Factory``), and the
  script's exit status is the result — unless it printed that a task failed or an exception
  (examples print their tasks' failures and exit 0 all the same).

A script that needs something this machine lacks is not run and is counted as "needs X":
a module it imports that is not installed, a remote host it names (no network is assumed:
``--network`` to try them), or a system kubevine has no counterpart for (Chirp, starch,
HTCondor, a poncho/conda packer, Ansys). A driver's ``check_needed`` probe that fails is
reported too; a probed module the script never imports (cctools' drivers probe
``conda_pack`` as a platform guard) does not stop the run. A script known to fail on TaskVine
itself (``BROKEN_UPSTREAM``) is run and counted apart, with the reason.

    python hack/taskvine_scripts.py FOLDER [FOLDER ...] [--only NAME ...] [--markdown]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Names cctools' drivers use for a script stored under another name in the repository's
# history (TR_vine_python_tag.sh runs vine_python_tag.py, kept as vine_test_tag.py).
ALIASES = {"vine_test_tag.py": "vine_python_tag.py"}

# What a script may use that no machine here provides: (pattern in its source, the need).
SYSTEMS = [
    (r"\bdeclare_chirp\s*\(", "a Chirp server (declare_chirp)"),
    (r"\bstarch\b", "starch (cctools' packer of executables)"),
    (r"batch_type\s*=\s*['\"](condor|sge|slurm|uge|pbs|torque|amazon|mesos)", "a batch system"),
    (r"^\s*(import|from)\s+poncho\b", "poncho (cctools' conda packer) and conda"),
    (r"declare_poncho\(\s*['\"]", "a packed environment made by poncho_package_create"),
    (r"module load ansys|\bfluent\b", "Ansys Fluent"),
]
# Scripts that fail on TaskVine itself: run, and counted apart with the reason.
BROKEN_UPSTREAM = {
    "vine_example_gradient_descent.py": "fails on TaskVine too: FunctionCall's library and function "
    "are swapped, the result is read as TaskVine's old JSON, and t.task_id does not exist",
    "vine_example_dask_graph.py": "fails on TaskVine today too: it passes m.get(lazy_transfer=...), "
    "TaskVine 7's name, which TaskVine's get no longer takes; it prints the TypeError and exits 0",
    "vine_futures.py": "TaskVine's old futures API (vine.Executor, executor.task), gone from TaskVine",
    "vine_python_futures.py": "TaskVine's old futures API (vine.Executor, future_pythontask), "
    "gone from TaskVine",
}
REMOTE = re.compile(r"['\"](https?|ftp|root)://(?!localhost|127\.0\.0\.1)([^/'\"{]+)")
# What example programs print when a task of theirs failed (they exit 0 all the same)
PRINTED_FAILURE = re.compile(
    r"failed with status|completed with an execut\w* error|did not generate a result|"
    r"Traceback \(most recent call last\)|^Error|Exception:",
    re.M,
)
PORT = re.compile(r"port\D{0,20}?(\d{2,5})\b", re.IGNORECASE)
TAIL = 12


@dataclass
class Outcome:
    name: str
    result: str  # "pass", "FAIL", "needs", "timeout"
    reason: str = ""
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)


def taskvine_scripts(folders: list[Path]) -> Iterator[Path]:
    for folder in folders:
        for path in sorted(folder.glob("*.py")):
            if re.search(r"^\s*(import|from)\s+ndcctools\.taskvine", path.read_text(), re.M):
                yield path


def ported(source: str) -> str:
    """The script with TaskVine's package named kubevine: the only change made."""
    return re.sub(r"\bndcctools\.taskvine\b", "kubevine", source)


def code_of(source: str) -> str:
    """The source without its comments (a commented-out ``Factory(...)`` asks for nothing)."""
    try:
        tokens = [
            t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT
        ]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, SyntaxError):
        return source


def imported_modules(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def missing_modules(source: str, python: str) -> list[str]:
    wanted = sorted(imported_modules(source) - {"ndcctools", "kubevine", "__future__"})
    if not wanted:
        return []
    probe = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    out = subprocess.run([python, "-c", probe, *wanted], capture_output=True, text=True, check=False)
    return out.stdout.split()


def needs(source: str, python: str, network: bool) -> str:
    """Why this script cannot run here, or "" when it can."""
    source = code_of(source)
    found = [need for pattern, need in SYSTEMS if re.search(pattern, source, re.M)]
    if not network:
        hosts = sorted({m.group(2) for m in REMOTE.finditer(source)})
        if hosts:
            found.append("the network (" + ", ".join(hosts) + ")")
    if not found:
        modules = missing_modules(source, python)
        if modules:
            found.append("Python module " + ", ".join(modules))
    return "; ".join(found)


def drivers_for(script: Path) -> list[Path]:
    """Every cctools driver that runs this script (vine_python.py has two: plain and SSL)."""
    name = ALIASES.get(script.name, script.name)
    out = []
    for tr in sorted(script.parent.glob("TR_*.sh")):
        text = tr.read_text()
        runs = re.search(rf"(EXEC\}}|PYTHON_SCRIPT\}}?)\s+{re.escape(name)}\b", text)
        named = re.search(rf"^PYTHON_SCRIPT={re.escape(name)}\s*$", text, re.M)
        if runs or named:
            out.append(tr)
    return out


# A stand-in for cctools' dttools/test/test_runner_common.sh: the helpers its TR_*.sh drivers
# call, with TaskVine's worker replaced by kubevine's (same options).
COMMON = r"""
TASKVINE_WORKER=$(cd "$(dirname "$0")/../.."; pwd)/vine_worker
export CC=${CC:-gcc}

import_config_val()
{
	name=$1
	value=$(grep "^${name}=" ../../config.mk | cut -d = -f 2-)
	export ${name}=${value}
}

dispatch()
{
	case "$1" in
		check_needed) check_needed "$@" ;;
		prepare) prepare "$@" ;;
		run) run "$@" ;;
		clean) clean "$@" ;;
		*) echo "unknown command: $1"; exit 1 ;;
	esac
	exit $?
}

wait_for_file_creation()
{
	filename=$1
	timeout=$2
	[ -z "$filename" ] && exit 1
	ticks=$((timeout * 10))
	i=0
	while [ $i -lt $ticks ]; do
		[ -f "$filename" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	echo "$filename was not created after $timeout seconds!"
	exit 1
}

run_taskvine_worker()
{
	port_file=$1
	shift
	log=$1
	shift
	[ -z "$log" ] && log=worker.log
	echo "Waiting for manager to be ready."
	wait_for_file_creation $port_file 15
	echo "Master is ready on port $(cat $port_file) "
	echo "Running worker."
	if ! "$TASKVINE_WORKER" --single-shot --timeout=10 \
			--cores ${cores:-1} --memory ${memory:-250} --disk ${disk:-250} --gpus ${gpus:-0} \
			--debug=all --debug-file="$log" "$@" localhost $(cat "$port_file"); then
		echo "ERROR: could not start worker"
		exit 1
	fi
	echo "Worker completed."
	return 0
}

require_identical_files()
{
	if diff "$1" "$2"; then return 0; fi
	echo "ERROR: $1 and $2 differ!"
	exit 1
}

check_needed()
{
	return 0
}

latest_vine_debug_log()
{
	base=${1:-vine-run-info}
	echo "${base}/most-recent/vine-logs/debug"
}
"""


def lay_out(root: Path, python: str) -> Path:
    """root/{config.mk, vine_worker, dttools/test/test_runner_common.sh, taskvine/test/}."""
    (root / "dttools" / "test").mkdir(parents=True)
    (root / "dttools" / "test" / "test_runner_common.sh").write_text(COMMON)
    (root / "config.mk").write_text(
        f"CCTOOLS_PYTHON_TEST_EXEC={python}\nCCTOOLS_PYTHON_TEST_DIR=\nCCTOOLS_OPENSSL_AVAILABLE=yes\n"
        "CCTOOLS_OPSYS=LINUX\n"
    )
    kubevine = Path(python).parent / "kubevine"
    worker = root / "vine_worker"
    worker.write_text(f'#!/bin/sh\nexec "{kubevine}" worker "$@"\n')
    worker.chmod(0o755)
    test = root / "taskvine" / "test"
    test.mkdir(parents=True)
    return test


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stray_groups(pgid: int) -> None:
    """Processes a run left behind in its group (a script the driver gave up on)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ln for ln in lines if ln.strip()][-TAIL:]


def run_with_driver(script: Path, driver: Path, python: str, timeout: float, keep: bool) -> Outcome:
    label = script.name if driver.stem == "TR_" + script.stem else f"{script.name} ({driver.name})"
    root = Path(tempfile.mkdtemp(prefix="tvs-"))
    test = lay_out(root, python)
    for tr in script.parent.glob("TR_*.sh"):
        shutil.copy(tr, test / tr.name)
    (test / ALIASES.get(script.name, script.name)).write_text(ported(script.read_text()))
    log = root / "output.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("KUBEVINE_TOKEN", None)
    start = time.monotonic()
    with log.open("w") as out:
        check = subprocess.run(
            ["sh", driver.name, "check_needed"], cwd=test, stdout=out, stderr=out, check=False
        )
    note = ""
    if check.returncode != 0:
        probed = set(re.findall(r'-c "(?:import|from) (\w+)', driver.read_text()))
        failed = [m for m in sorted(probed) if importlib.util.find_spec(m) is None]
        used = [m for m in failed if m in imported_modules(script.read_text())]
        if used or not failed:
            return Outcome(label, "needs", f"its driver's check_needed: {', '.join(failed) or 'failed'}")
        note = f"(its driver's probe for {', '.join(failed)} fails here; the script never imports it) "
    with log.open("a") as out:
        prep = subprocess.run(["sh", driver.name, "prepare"], cwd=test, stdout=out, stderr=out, check=False)
    if prep.returncode != 0:
        return Outcome(label, "FAIL", note + "prepare failed", time.monotonic() - start, tail(log))
    with log.open("a") as out:
        proc = subprocess.Popen(
            ["sh", driver.name, "run"], cwd=test, stdout=out, stderr=out, env=env, start_new_session=True
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        kill_group(proc)
    seconds = time.monotonic() - start
    lines = tail(log)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        lines.append(f"(kept in {root})")
    if code is None:
        return Outcome(label, "timeout", note + f"still running after {timeout:.0f} s", seconds, lines)
    if code == 0:
        return Outcome(label, "pass", note.strip(), seconds, lines)
    return Outcome(label, "FAIL", note + f"driver exit {code}", seconds, lines)


def workers_wanted(source: str) -> int:
    source = code_of(source)
    if re.search(r"\bFactory\s*\(|factory\s*=\s*True", source):
        return 0
    m = re.search(r"tune\(\s*['\"]wait-for-workers['\"]\s*,\s*(\d+)", source)
    return int(m.group(1)) if m else 1


def run_alone(script: Path, python: str, timeout: float, keep: bool) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix="tvs-"))
    source = script.read_text()
    (root / script.name).write_text(ported(source))
    kubevine = str(Path(python).parent / "kubevine")
    log = root / "output.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("KUBEVINE_TOKEN", None)
    start = time.monotonic()
    workers: list[subprocess.Popen[bytes]] = []
    # a test script whose driver is not here takes the port file as its argument (TaskVine's
    # drivers give "vine.port"): give it one, and read the port from it
    port_file = root / "vine.port" if re.search(r"port_file\s*=\s*sys\.argv\[1\]", source) else None
    with log.open("w") as out:
        proc = subprocess.Popen(
            [python, script.name, *([port_file.name] if port_file else [])],
            cwd=root,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
        wanted = workers_wanted(source)
        ssl = ["--ssl"] if re.search(r"\bssl\s*=\s*True", code_of(source)) else []
        deadline = start + timeout
        code: int | None = None
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                break
            if wanted and not workers:
                if port_file is not None:
                    m = re.match(r"\s*(\d+)", port_file.read_text()) if port_file.exists() else None
                else:
                    m = PORT.search(log.read_text(errors="replace"))
                if m:
                    for i in range(wanted):
                        wlog = root / f"worker{i}.log"
                        workers.append(
                            subprocess.Popen(
                                [
                                    kubevine,
                                    "worker",
                                    "--single-shot",
                                    "--timeout",
                                    "10",
                                    *ssl,
                                    "localhost",
                                    m.group(1),
                                ],
                                cwd=root,
                                stdout=wlog.open("w"),
                                stderr=subprocess.STDOUT,
                                env=env,
                                start_new_session=True,
                            )
                        )
            time.sleep(0.2)
        kill_group(proc)
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(w)
    seconds = time.monotonic() - start
    lines = tail(log)
    output = log.read_text(errors="replace")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        lines.append(f"(kept in {root})")
    if code is None:
        return Outcome(script.name, "timeout", f"still running after {timeout:.0f} s", seconds, lines)
    if code == 0:
        printed = PRINTED_FAILURE.search(output)
        if printed:  # an example exits 0 whatever happened to its tasks: it says so in print
            line = output[output.rfind("\n", 0, printed.start()) + 1 :].split("\n", 1)[0]
            return Outcome(script.name, "FAIL", f"exit 0, but it printed: {line.strip()}", seconds, lines)
        return Outcome(script.name, "pass", "", seconds, lines)
    return Outcome(script.name, "FAIL", f"exit {code}", seconds, lines)


def run_one(script: Path, python: str, timeout: float, network: bool, keep: bool) -> list[Outcome]:
    source = script.read_text()
    why = needs(source, python, network)
    drivers = drivers_for(script)
    if why:
        return [Outcome(script.name, "needs", why)]
    if drivers:
        rows = [run_with_driver(script, d, python, timeout, keep) for d in drivers]
    else:
        rows = [run_alone(script, python, timeout, keep)]
    broken = BROKEN_UPSTREAM.get(script.name)
    for r in rows:
        if broken and r.result != "pass":
            r.result, r.reason = "broken", f"{broken} ({r.reason})"
    return rows


def table(rows: list[Outcome], markdown: bool) -> str:
    if markdown:
        lines = ["| script | result | reason |", "|---|---|---|"]
        lines += [f"| `{r.name}` | {r.result} | {r.reason} |" for r in rows]
        return "\n".join(lines)
    width = max(len(r.name) for r in rows)
    return "\n".join(f"{r.name:<{width}}  {r.result:<7} {r.seconds:6.1f}s  {r.reason}" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="folders of TaskVine scripts (and their TR_*.sh)")
    p.add_argument("--only", nargs="*", default=[], help="run only scripts whose name contains one of these")
    p.add_argument("--python", default=sys.executable, help="interpreter with kubevine installed")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a script may take")
    p.add_argument("--network", action="store_true", help="try scripts that name remote hosts")
    p.add_argument("--keep", action="store_true", help="keep each run's folder (printed)")
    p.add_argument("--quiet", action="store_true", help="no output tails for failures")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args(argv)
    rows: list[Outcome] = []
    for script in taskvine_scripts(args.folders):
        if args.only and not any(o in script.name for o in args.only):
            continue
        for row in run_one(script, args.python, args.timeout, args.network, args.keep):
            rows.append(row)
            print(f"{row.name}: {row.result} {row.reason} ({row.seconds:.1f} s)", flush=True)
            if row.result in ("FAIL", "timeout") and not args.quiet:
                print("    " + "\n    ".join(row.tail), flush=True)
    if not rows:
        print("no TaskVine scripts found")
        return 1
    print()
    print(table(rows, args.markdown))
    ran = [r for r in rows if r.result not in ("needs", "broken")]
    passed = [r for r in ran if r.result == "pass"]
    needing = sum(r.result == "needs" for r in rows)
    broken = sum(r.result == "broken" for r in rows)
    print(
        f"\n{len(passed)} of {len(ran)} runnable scripts pass unchanged "
        f"({needing} need what is not here, {broken} fail on TaskVine too)"
    )
    return 0 if len(passed) == len(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
