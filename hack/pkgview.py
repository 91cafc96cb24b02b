"""The installed package's layout, materialised for tools that read source trees.

kubevine's services live in top-level folders (``manager/``, ``worker/``, ``operator/``) that
setuptools maps into the package (``[tool.setuptools.package-dir]`` in pyproject.toml):
``import kubevine.manager`` works in an installed or editable checkout, with no symlinks.
mypy and import-linter, however, find modules by walking directories, so they would never see
``kubevine.manager``. This script copies the package's files into ``.pkgview/`` in the layout
the wheel has (only files whose content changed are rewritten, so mypy's cache stays warm),
runs the tool there, and rewrites the paths it prints back to the files you edit.

    python hack/pkgview.py mypy [mypy args]      # what `make typecheck` runs
    python hack/pkgview.py lint-imports          # the contracts in .importlinter
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEW = ROOT / ".pkgview"
KEEP = (".py", ".pyi", "py.typed")


def package_dirs() -> dict[str, Path]:
    """Each package of the distribution and the folder its files come from."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = conf.get("package-dir", {})
    out: dict[str, Path] = {}
    for pkg in conf["packages"]:
        parts = pkg.split(".")
        for i in range(len(parts), 0, -1):  # the nearest mapped ancestor decides
            base = ".".join(parts[:i])
            if base in mapping:
                out[pkg] = ROOT / mapping[base] / Path(*parts[i:])
                break
        else:
            out[pkg] = ROOT / Path(*parts)
    return out


def build() -> dict[str, str]:
    """Mirror the package into VIEW; returns view-relative folder -> repo-relative folder."""
    wanted: set[Path] = set()
    folders: dict[str, str] = {}
    for pkg, src in package_dirs().items():
        dest = VIEW / Path(*pkg.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        folders[dest.relative_to(VIEW).as_posix() + "/"] = src.relative_to(ROOT).as_posix() + "/"
        for f in sorted(src.iterdir()):
            if not f.is_file() or not f.name.endswith(KEEP):
                continue
            target = dest / f.name
            wanted.add(target)
            data = f.read_bytes()
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
    for f in VIEW.rglob("*"):  # files removed or moved in the tree leave the view too
        if f.is_file() and f.name.endswith(KEEP) and f not in wanted and ".mypy_cache" not in f.parts:
            f.unlink()
    return folders


def _back(text: str, folders: dict[str, str]) -> str:
    """Paths in a tool's output, from the view back to the tree."""
    longest = sorted(folders, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(k) for k in longest) + r")(?=[\w.-]+\.pyi?\b)")
    return pattern.sub(lambda m: folders[m.group(1)], text)


def run(tool: str, args: list[str]) -> int:
    folders = build()
    bindir = Path(sys.executable).parent
    if tool == "mypy":
        cmd = [str(bindir / "mypy"), "--config-file", str(ROOT / "pyproject.toml")]
        cmd += ["--cache-dir", str(ROOT / ".mypy_cache"), *(args or ["kubevine"])]
    elif tool == "lint-imports":
        cmd = [str(bindir / "lint-imports"), "--no-cache", str(ROOT / ".importlinter"), *args]
    else:
        print(f"pkgview: unknown tool {tool!r} (mypy, lint-imports)", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(VIEW)}
    proc = subprocess.run(cmd, cwd=VIEW, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(_back(proc.stdout, folders))
    sys.stderr.write(_back(proc.stderr, folders))
    return proc.returncode


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "clean":
        shutil.rmtree(VIEW, ignore_errors=True)
        return 0
    return run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
