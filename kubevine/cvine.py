"""TaskVine's constants module (``vine.cvine.VINE_RESULT_SUCCESS``, ...), for programs that
name them there; the values and their meaning are in :mod:`kubevine.taskvine`."""

from __future__ import annotations

from typing import Any

from kubevine.taskvine import CONSTANTS

globals().update(CONSTANTS)


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"kubevine.cvine has no constant {name!r} (TaskVine names kubevine maps: {len(CONSTANTS)})"
    )
