"""``progress=True`` in Jupyter: a real IPython kernel shows a widget bar that reaches 100%.

The test drives a real kernel (ipykernel, over jupyter_client's ZeroMQ protocol) the way a
notebook front end does, runs a small LocalCluster workload in it, and reads what a
browser would render from the kernel's iopub messages: a widget view is displayed, and the
widget models' last state shows the bar at N of N. Without `progress=True` the same cell
displays no widget at all.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CELL = """
from kubevine import LocalCluster, Manager, Task

with LocalCluster(workers=2, workdir=WORKDIR) as c, Manager(c.address, token=c.token) as m:
    for i in range(N):
        m.submit(Task(f"echo {i}"))
    got = sum(1 for _ in m.results(progress=PROGRESS, timeout=60))
print(f"collected {got}")
"""


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh IPython kernel (the venv's python) and a blocking client connected to it."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core warns at import without it
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    from jupyter_client.manager import KernelManager

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEVINE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    km = KernelManager(kernel_name="python3")  # ipykernel's own spec: this interpreter
    km.start_kernel(env=env, extra_arguments=[], cwd=str(tmp_path))
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def run_cell(client: Any, code: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Execute `code`; every iopub message it caused, until the kernel is idle again."""
    msg_id = client.execute(code)
    messages = []
    while True:
        try:
            msg = client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the kernel went quiet; so far: {[m['msg_type'] for m in messages]}"
            ) from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def widget_states(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each widget model's state after every comm_open and comm_msg update, as a browser keeps it."""
    models: dict[str, dict[str, Any]] = {}
    for msg in messages:
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            models[content["comm_id"]] = dict(content["data"].get("state", {}))
        elif msg["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            models.setdefault(content["comm_id"], {}).update(content["data"]["state"])
    return models


def stream_text(messages: list[dict[str, Any]], name: str) -> str:
    return "".join(
        m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


def errors(messages: list[dict[str, Any]]) -> list[str]:
    return ["\n".join(m["content"]["traceback"]) for m in messages if m["msg_type"] == "error"]


def cell(tmp_path: Path, n: int, progress: bool, run: str) -> str:
    code = CELL.replace("WORKDIR", repr(str(tmp_path / run))).replace("PROGRESS", str(progress))
    return code.replace("range(N)", f"range({n})")


def test_in_jupyter_the_bar_is_a_widget_that_reaches_100_percent(kernel: Any, tmp_path: Path) -> None:
    n = 30
    messages = run_cell(kernel, cell(tmp_path, n, True, "with-bar"))
    assert not errors(messages), errors(messages)[0]
    assert stream_text(messages, "stdout").strip().endswith(f"collected {n}")
    views = [m for m in messages if m["msg_type"] == "display_data" and WIDGET_VIEW in m["content"]["data"]]
    assert len(views) == 1, [m["msg_type"] for m in messages]
    models = widget_states(messages)
    bars = [s for s in models.values() if s.get("_model_name") in ("FloatProgressModel", "IntProgressModel")]
    assert len(bars) == 1, models
    assert bars[0]["max"] == n and bars[0]["value"] == n  # 100%
    labels = " ".join(str(s.get("value", "")) for s in models.values() if s.get("_model_name") == "HTMLModel")
    assert f"{n}/{n}" in labels and "100%" in labels, labels
    assert stream_text(messages, "stderr") == ""  # the bar is the widget, not text


def test_in_jupyter_without_progress_no_widget_is_shown(kernel: Any, tmp_path: Path) -> None:
    messages = run_cell(kernel, cell(tmp_path, 10, False, "no-bar"))
    assert not errors(messages), errors(messages)[0]
    assert stream_text(messages, "stdout").strip().endswith("collected 10")
    assert not [m for m in messages if m["msg_type"] in ("comm_open", "display_data")]
    assert stream_text(messages, "stderr") == ""
