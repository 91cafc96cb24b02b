"""Keeping the workflow token away from the tasks a worker runs.

Tasks run as the worker's user, so whatever the worker can read of itself through ``/proc``
they can read too, unless the worker hides it. The token is read once, when the worker
starts (``$KUBEVINE_TOKEN`` or ``--token-file``), and then:

- removed from ``os.environ`` (so no child is ever given it), and overwritten in the
  process's *initial* environment block — the bytes ``/proc/<pid>/environ`` shows, which
  ``unsetenv`` leaves in place — found through ``/proc/self/stat``'s env_start/env_end;
- the worker is made non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): its ``/proc/<pid>/mem``,
  ``environ`` and the like become root's, and no process of its user may ptrace it;
- with ``--unlink-token-file`` the file (the worker's own copy) is removed once read.

It is never put on a command line. What is left: root (and a task running as root) can still
read the worker's memory (``/proc/<pid>/mem``) and so the token; a token file that is not the
worker's own copy stays readable by whoever may read it (give workers their own copy, or a
Kubernetes Secret their tasks cannot reach).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from kubevine import auth

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # linux/prctl.h


def take_token(token_file: str | None, *, unlink: bool = False) -> str | None:
    """The token (from ``token_file``, else ``$KUBEVINE_TOKEN``), read once and then hidden."""
    token = auth.load_token(token_file)
    if token_file and unlink:
        try:
            Path(token_file).unlink()
        except OSError as e:
            log.warning("could not remove the token file %s: %s", token_file, e.strerror)
    if token is not None:
        scrub_environment(auth.ENV, token)
    return token


def scrub_environment(name: str, secret: str) -> None:
    """Remove ``name`` from the environment, and its value from the initial environment block."""
    os.environ.pop(name, None)
    _overwrite_initial_environ([f"{name}=".encode(), secret.encode()])
    non_dumpable()


def non_dumpable() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as e:
        log.warning("cannot make the worker non-dumpable: %s", e)


def _overwrite_initial_environ(needles: list[bytes]) -> None:
    """Overwrite every occurrence of ``needles`` in [env_start, env_end) of this process."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51)
    except (OSError, ValueError, IndexError) as e:
        log.warning("cannot find the initial environment to scrub it: %s", e)
        return
    if not 0 < start < end:
        return
    block = ctypes.string_at(start, end - start)
    for needle in needles:
        if not needle:
            continue
        at = block.find(needle)
        while at >= 0:
            ctypes.memset(start + at, ord("x"), len(needle))
            at = block.find(needle, at + len(needle))
