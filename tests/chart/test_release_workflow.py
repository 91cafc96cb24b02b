"""The release workflow (.github/workflows/release.yaml) cannot run here (no GitHub runner, no
Docker engine), so it is read instead: it runs on a version tag only, builds the slim and the
HEP image from docker/Dockerfile with build arguments the Dockerfile declares and extras the
package has, and pushes them under exactly the names the chart's `image.repository`,
`image.tag` and `image.variant` produce; its version check is run for real with bash."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yaml"
CHART = ROOT / "charts" / "kubevine"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


WF = load()
(JOB,) = WF["jobs"].values()
STEPS: list[dict[str, Any]] = JOB["steps"]
BUILD = next(s for s in STEPS if str(s.get("uses", "")).startswith("docker/build-push-action@"))
VERSION_STEP = next(s for s in STEPS if s.get("id") == "version")
VARIANTS = {v["variant"]: v for v in JOB["strategy"]["matrix"]["include"]}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def operator_image(chart: helm.Chart, values: dict[str, Any]) -> str:
    rendered = chart.render(values, name="kv", namespace="kubevine")
    for path, text in rendered.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if doc and doc["kind"] == "Deployment":
                return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])
    raise AssertionError("the chart renders no Deployment")


def expand(template: str, variant: dict[str, str], outputs: dict[str, str]) -> str:
    """The value of a `${{ ... }}` template for one matrix entry and the version step's outputs."""

    def value(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr.startswith("matrix."):
            return variant[expr.removeprefix("matrix.")]
        if expr.startswith("steps.version.outputs."):
            return outputs[expr.removeprefix("steps.version.outputs.")]
        raise AssertionError(f"unexpected expression {expr}")

    return re.sub(r"\$\{\{(.*?)\}\}", value, template)


def run_version_step(
    tag: str, owner: str = "KubeVine", tmp: Path | None = None
) -> tuple[int, dict[str, str]]:
    """Run the version step's script as GitHub would (bash -eo pipefail) for the tag `tag`."""
    assert tmp is not None
    output = tmp / f"output-{tag}"
    output.write_text("")
    env = {
        **os.environ,
        "GITHUB_REF_NAME": tag,
        "GITHUB_REPOSITORY_OWNER": owner,
        "GITHUB_OUTPUT": str(output),
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", VERSION_STEP["run"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return result.returncode, outputs


def test_it_runs_on_a_version_tag_only_and_may_push_packages() -> None:
    assert WF["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert WF["permissions"]["packages"] == "write"
    assert WF["permissions"]["contents"] == "read"


def test_every_action_is_pinned_to_a_major_version() -> None:
    for step in STEPS:
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_it_builds_the_slim_and_the_hep_image_from_the_dockerfile() -> None:
    assert set(VARIANTS) == {"slim", "hep"}
    assert VARIANTS["slim"]["extras"] == "" and VARIANTS["slim"]["suffix"] == ""
    assert VARIANTS["hep"]["extras"] == "hep" and VARIANTS["hep"]["suffix"] == "-hep"
    options = BUILD["with"]
    assert (ROOT / options["context"]).is_dir()
    assert (ROOT / options["context"] / options["file"]).resolve() == DOCKERFILE
    assert options["push"] is True
    # Each build argument is an ARG of the Dockerfile, and the extras are the package's own.
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), flags=re.MULTILINE))
    args = dict(line.strip().split("=", 1) for line in options["build-args"].splitlines() if line.strip())
    assert set(args) <= declared, (args, declared)
    assert args["EXTRAS"] == "${{ matrix.extras }}"
    for variant in VARIANTS.values():
        extras = variant["extras"]
        assert not extras or extras in PYPROJECT["project"]["optional-dependencies"], extras
    # ... which the Dockerfile installs: `pip install ".[$EXTRAS]"`, or the package alone.
    assert 'pip install ".[$EXTRAS]"' in DOCKERFILE.read_text()


def test_the_tags_pushed_are_what_the_chart_pulls(chart: helm.Chart, tmp_path: Path) -> None:
    version = chart.metadata["appVersion"]
    code, outputs = run_version_step(f"v{version}", tmp=tmp_path)
    assert code == 0
    assert outputs["version"] == version
    assert outputs["image"] == "ghcr.io/kubevine/kubevine"  # the owner lower-cased, as registries need
    pushed = {name: expand(BUILD["with"]["tags"], v, outputs) for name, v in VARIANTS.items()}
    assert pushed["slim"] == operator_image(chart, {})
    assert pushed["hep"] == operator_image(chart, {"image": {"variant": "hep"}})
    assert pushed == {
        "slim": f"ghcr.io/kubevine/kubevine:{version}",
        "hep": f"ghcr.io/kubevine/kubevine:{version}-hep",
    }


def test_a_tag_that_is_not_the_charts_version_pushes_nothing(tmp_path: Path) -> None:
    assert PYPROJECT["project"]["version"] == yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    code, outputs = run_version_step("v99.0.0", tmp=tmp_path)
    assert code != 0 and "version" not in outputs
    # The build step comes after the check, so a failed check stops the job before any push.
    assert STEPS.index(VERSION_STEP) < STEPS.index(BUILD)
