"""The package is laid out as one house: the services are mapped in, nothing is linked twice.

The manager, worker and operator keep their top-level folders and setuptools maps them into
``kubevine`` (``[tool.setuptools.package-dir]``). These tests keep that map true as the tree
grows: every package folder is listed (a new subpackage left out would be missing from the
wheel and the image), there are no symlinks (a checkout on a filesystem without them must
work), each module is importable under exactly one name, and nothing imports a service
folder by its bare name (which would load a second copy of it from a checkout).
"""

from __future__ import annotations

import ast
import importlib
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
MAPPED = SETUPTOOLS["package-dir"]
SERVICES = ("manager", "worker", "operator")

sys.path.insert(0, str(ROOT / "hack"))
import pkgview  # noqa: E402


def _package_folders() -> dict[str, Path]:
    """Every folder with an __init__.py under the package roots, by the name it imports as."""
    found: dict[str, Path] = {}
    for pkg, folder in MAPPED.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            found.setdefault(name, init.parent)
    return found


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    folders = _package_folders()
    assert set(SETUPTOOLS["packages"]) == set(folders)
    assert pkgview.package_dirs() == folders


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_a_regular_package_mapped_from_its_own_folder(service: str) -> None:
    assert MAPPED[f"kubevine.{service}"] == service
    assert (ROOT / service / "__init__.py").is_file(), "a namespace package would ship without its doc"
    module = importlib.import_module(f"kubevine.{service}")
    assert Path(module.__file__ or "").resolve() == (ROOT / service / "__init__.py").resolve()


def test_no_symlinks_in_the_package_tree() -> None:
    for folder in {*MAPPED.values()}:
        for path in (ROOT / folder).rglob("*"):
            assert not path.is_symlink(), f"{path.relative_to(ROOT)} is a symlink"


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for n in names:
            # `operator` alone is Python's own module; its submodules would be ours
            top, _, rest = n.partition(".")
            if top in ("manager", "worker") or (top == "operator" and rest):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {n}")
    return bad


def test_nothing_imports_a_service_folder_by_its_bare_name() -> None:
    bad: list[str] = []
    for top in ("kubevine", *SERVICES, "tests", "bench", "examples", "hack"):
        for path in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in path.parts:
                bad += _bare_imports(path)
    assert not bad, "\n".join(bad)


def test_a_checkout_on_pythonpath_does_not_shadow_the_standard_operator_module(tmp_path: Path) -> None:
    """operator/ is a regular package now; with the checkout's root on sys.path, Python finds it
    as a top-level `operator` while starting up. It must then be the standard module (else the
    interpreter dies at start), and kubevine's operator still imports as kubevine.operator."""
    import os
    import subprocess

    code = (
        "import collections, operator, functools\n"
        "assert operator.eq(2, 2) and operator.itemgetter(1)('ab') == 'b' and operator.__add__(1, 2) == 3\n"
        "import kubevine.operator.spec as spec\n"
        "print(spec.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (ROOT / "operator" / "spec.py").resolve()
