"""The layering in .importlinter holds, and a change that breaks it is caught.

``make check`` runs the same contracts; here they are part of the suite, so CI fails on a
service importing another, on an operator decision module importing kopf, or on the client
importing the manager. The last tests break a contract on purpose, in a copy of the package,
to show the check would notice.
"""

from __future__ import annotations

import configparser
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubevine

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"

sys.path.insert(0, str(ROOT / "hack"))
import pkgview  # noqa: E402


def _lint(view: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", str(ROOT / ".importlinter")],
        cwd=view,
        env={**os.environ, "PYTHONPATH": str(view)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_are_kept() -> None:
    pkgview.build()
    proc = _lint(pkgview.VIEW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 kept, 0 broken" in " ".join(proc.stdout.split())


def test_every_shared_module_of_kubevine_is_under_the_shared_contract() -> None:
    """A new module in kubevine/ is held to the rule unless it is the CLI (which starts the
    services) or one of the services themselves."""
    conf = configparser.ConfigParser()
    conf.read(ROOT / ".importlinter")
    listed = set(conf["importlinter:contract:shared"]["source_modules"].split())
    modules = {f"kubevine.{m.name}" for m in pkgutil.iter_modules(kubevine.__path__)}
    modules -= {
        "kubevine.__main__",
        "kubevine.cli",
        "kubevine.manager",
        "kubevine.worker",
        "kubevine.operator",
    }
    assert modules == listed


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("kubevine/worker/cache.py", "import kubevine.manager.catalog", "never import one another"),
        ("kubevine/operator/spec.py", "import kopf", "import neither kopf nor kubernetes"),
        (
            "kubevine/client.py",
            "from kubevine.worker import cache",
            "imports neither the manager nor the worker",
        ),
        ("kubevine/protocol.py", "import kubevine.operator.naming", "(only the CLI starts them)"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    pkgview.build()
    view = tmp_path / "view"
    shutil.copytree(pkgview.VIEW, view, ignore=shutil.ignore_patterns(".mypy_cache", "__pycache__"))
    target = view / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    proc = _lint(view)
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())  # the report wraps long contract names
    assert f"{contract} BROKEN" in said, proc.stdout
    assert "0 broken" not in said
