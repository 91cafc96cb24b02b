"""Dying with the worker: the processes a worker starts must not outlive it.

A library process and the PythonTask starter are the worker's children; if the worker is
killed by SIGKILL it cannot stop them, so each asks the kernel for SIGKILL on its parent's
death (PR_SET_PDEATHSIG). Kept apart so that those processes import nothing else of ours.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """Exit when the worker that started us dies, even by SIGKILL (it cannot stop us then):
    the kernel sends SIGKILL on the parent's death; where prctl is missing, a thread watches."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(70)

        threading.Thread(target=watch, name="kubevine-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before we asked to be told
        os._exit(70)
