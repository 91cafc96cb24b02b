"""TaskVine's ``utils``: names a TaskVine program imports from ``ndcctools.taskvine.utils``."""

from __future__ import annotations

import os
from typing import Any

from kubevine.results import library_context
from kubevine.taskvine import CONSTANTS


def load_variable_from_library(name: str) -> Any:
    """Inside a library's function: a variable its context set up (TaskVine's context function
    returns a dict whose keys become the library's globals; in kubevine,
    ``kubevine.library_context()`` returns what the setup returned)."""
    ctx = library_context()
    if isinstance(ctx, dict) and name in ctx:
        return ctx[name]
    raise NameError(f"the library's context has no variable {name!r}")


def get_c_constant(name: str) -> int:
    """``get_c_constant("result_success")`` is ``VINE_RESULT_SUCCESS``."""
    return CONSTANTS["VINE_" + name.upper()]


def set_port_range(low: int, high: int | None = None) -> None:
    """TaskVine's port range for the next manager: kubevine takes it as ``Manager([low, high])``;
    set here as TaskVine does, in $TCP_LOW_PORT/$TCP_HIGH_PORT."""
    if high is not None and low > high:
        raise TypeError(f"port range {low}-{high}: the low end is above the high end")
    os.environ["TCP_LOW_PORT"] = str(low)
    os.environ["TCP_HIGH_PORT"] = str(high if high is not None else low)
