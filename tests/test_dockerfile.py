"""The image cannot be built here (no Docker engine), so its Dockerfile is read instead:
every path it copies exists and survives .dockerignore, its entry point is a console
script the package declares, it runs as the non-root user the pods expect, and the
virtualenv is built in a stage of its own."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kubevine.operator.podparts import RUN_AS_USER

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """Instructions grouped by stage, with line continuations joined and the global
    ARGs substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            arg, _, default = args.partition("=")
            global_args[arg] = default
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args.split()[0])
            parts = args.split()
            stage_name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=stage_name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def copies() -> list[tuple[Stage, list[str], str, str | None]]:
    """(stage, sources, destination, --from) of every COPY."""
    found = []
    for stage in STAGES:
        for args in stage.all("COPY"):
            words = args.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            found.append((stage, paths[:-1], paths[-1], source_stage))
    return found


def ignored(path: str) -> bool:
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    parts = Path(path.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(c, p.rstrip("/")) or fnmatch.fnmatch(c, p.removeprefix("**/"))
        for p in patterns
        if not p.startswith("!")
        for c in candidates
    )


def test_the_image_is_built_in_two_stages_on_python_3_11_slim() -> None:
    assert len(STAGES) >= 2
    assert {stage.base for stage in STAGES} == {"python:3.11-slim"}
    assert STAGES[0].name is not None


def test_the_virtualenv_is_built_in_the_first_stage_and_only_it_is_carried_over() -> None:
    build = STAGES[0]
    assert any("python -m venv /opt/kubevine" in run for run in build.all("RUN"))
    assert any("pip install" in run for run in build.all("RUN"))
    final_copies = [(src, dest, frm) for stage, src, dest, frm in copies() if stage is FINAL]
    assert final_copies == [(["/opt/kubevine"], "/opt/kubevine", build.name)]
    assert not any("pip install" in run for run in FINAL.all("RUN"))


def test_every_copied_path_exists_and_is_not_excluded_by_dockerignore() -> None:
    local = [(sources, frm) for _, sources, _, frm in copies() if frm is None]
    assert local
    for sources, _ in local:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_copy_from_names_an_earlier_stage() -> None:
    names = [stage.name for stage in STAGES]
    for stage, _, _, frm in copies():
        if frm is not None:
            assert frm in names[: STAGES.index(stage)]


def test_every_folder_the_package_maps_in_is_copied_too() -> None:
    """The manager, worker and operator folders are mapped into the package by pyproject's
    package-dir: the image must hold each of them or the package is incomplete."""
    copied = {s.rstrip("/") for _, sources, _, frm in copies() if frm is None for s in sources}
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert {"kubevine", "manager", "worker", "operator"} <= folders
    for folder in folders:
        assert folder in copied, f"{folder}/ is mapped into the package but not copied"


def test_the_readme_the_package_metadata_names_is_copied() -> None:
    copied = {s for _, sources, _, frm in copies() if frm is None for s in sources}
    assert PYPROJECT["project"]["readme"] in copied
    assert "pyproject.toml" in copied


def test_the_entry_point_is_a_console_script_of_the_package() -> None:
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form, so signals reach the process
    scripts = PYPROJECT["project"]["scripts"]
    assert command[0] in scripts
    module_name, _, function = scripts[command[0]].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function))


def test_the_worker_drain_hook_calls_the_same_entry_point() -> None:
    from kubevine.operator.naming import WorkflowRef
    from kubevine.operator.settings import OperatorSettings
    from kubevine.operator.spec import parse_spec
    from kubevine.operator.workerpod import build_worker_pod

    pod = build_worker_pod(
        WorkflowRef("wf", "ns", "u"), parse_spec({"stateStore": {"managed": True}}), "a", OperatorSettings()
    )
    hook = pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[0] == json.loads(FINAL.all("ENTRYPOINT")[0])[0]
    assert any("PATH=/opt/kubevine/bin" in env for env in FINAL.all("ENV"))


def test_the_image_runs_as_the_non_root_user_the_pods_expect() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(uid) != 0
    assert int(uid) == RUN_AS_USER
    assert not gid or int(gid) != 0
    assert any(f"--uid {uid}" in run for run in FINAL.all("RUN"))


def test_redis_is_not_in_the_image() -> None:
    for stage in STAGES:
        for run in stage.all("RUN"):
            assert "redis" not in run


def test_the_hep_image_has_xrootds_client_for_root_urls() -> None:
    runs = [run for run in FINAL.all("RUN") if "xrootd-client" in run]
    assert runs and all("*hep*" in run and "apt-get install" in run for run in runs)
    assert ("ARG", "EXTRAS=hep") in FINAL.instructions  # on by default, as the extras are


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    for path in (".venv", ".git", "tests", "kubevine/__pycache__", "kubevine.egg-info"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"


def test_the_package_built_from_the_copied_files_holds_every_part(tmp_path: Path) -> None:
    """Replays the build stage's COPYs into a directory and builds the wheel `pip install`
    would install: the operator, manager and worker must be inside, as `kubevine.*`."""
    import shutil
    import subprocess
    import sys
    import zipfile

    context = tmp_path / "src"
    context.mkdir()
    for stage, sources, dest, frm in copies():
        if stage is not STAGES[0] or frm is not None:
            continue
        for source in sources:
            if (ROOT / source).is_dir():  # a directory's contents go into dest
                shutil.copytree(
                    ROOT / source,
                    context / dest,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:  # a file goes into dest/ (or becomes dest)
                into = dest.endswith("/") or dest in (".", "./")
                shutil.copy2(ROOT / source, context / dest / source if into else context / dest)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (context / "dist").glob("kubevine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "kubevine/cli/__init__.py",
        "kubevine/dask/execute.py",
        "kubevine/operator/spec.py",
        "kubevine/operator/manifests.py",
        "kubevine/manager/__init__.py",
        "kubevine/worker/__init__.py",
    ):
        assert module in names, f"{module} missing from the image's package"
    assert not any(name.startswith("operator/") for name in names)  # never shadows stdlib
