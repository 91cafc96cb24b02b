"""TaskVine's vocabulary: its result names and numeric constants, mapped onto kubevine's.

A TaskVine program reads ``t.result`` as a lower-case string ("success", "input missing",
"max wall time", ...) and compares it with ``vine.VINE_RESULT_*`` constants in older code;
``t.completed()`` means the command ran to its end (any exit code) and ``t.successful()``
that it also exited 0. kubevine keeps its own, finer reason for every attempt in
``t.outcome`` (:class:`~kubevine.protocol.Outcome`: it tells a nonzero exit from a raised
exception, a lost worker from an unschedulable task); this module is the one place that maps
one onto the other, so the two never drift apart.
"""

from __future__ import annotations

import enum

from kubevine.protocol import DEFAULT_PORT, Outcome


class Result(enum.StrEnum):
    """TaskVine's ``t.result`` (``vine_result_string`` lower-cased, ``_`` as a space)."""

    SUCCESS = "success"  # ran to the end: see exit_code
    INPUT_MISSING = "input missing"
    OUTPUT_MISSING = "output missing"
    STDOUT_MISSING = "stdout missing"
    SIGNAL = "signal"
    RESOURCE_EXHAUSTION = "resource exhaustion"
    MAX_END_TIME = "max end time"
    UNKNOWN = "unknown"
    FORSAKEN = "forsaken"
    MAX_RETRIES = "max retries"
    MAX_WALL_TIME = "max wall time"
    RMONITOR_ERROR = "monitor error"
    OUTPUT_TRANSFER_ERROR = "output transfer error"
    FIXED_LOCATION_MISSING = "fixed location missing"
    CANCELLED = "cancelled"
    LIBRARY_EXIT = "library exit"
    SANDBOX_EXHAUSTION = "sandbox exhaustion"
    MISSING_LIBRARY = "missing library"


#: kubevine's reason for an attempt's end -> TaskVine's result. A command that exited nonzero
#: and a function that raised both *ran to the end* ("success", with an exit code).
RESULT_OF: dict[Outcome, Result] = {
    Outcome.SUCCESS: Result.SUCCESS,
    Outcome.EXIT_NONZERO: Result.SUCCESS,
    Outcome.EXCEPTION: Result.SUCCESS,
    Outcome.OUTPUT_MISSING: Result.OUTPUT_MISSING,
    Outcome.INPUT_MISSING: Result.INPUT_MISSING,
    Outcome.SANDBOX_ERROR: Result.UNKNOWN,
    Outcome.WORKER_LOST: Result.FORSAKEN,
    Outcome.CANCELLED: Result.CANCELLED,
    Outcome.UNSCHEDULABLE: Result.RESOURCE_EXHAUSTION,
    Outcome.LIBRARY_ERROR: Result.MISSING_LIBRARY,
    Outcome.MAX_WALL_TIME: Result.MAX_WALL_TIME,
    Outcome.MAX_END_TIME: Result.MAX_END_TIME,
    Outcome.FORSAKEN: Result.FORSAKEN,
}

#: TaskVine's numeric codes (``VINE_RESULT_*``), for programs that still compare numbers
RESULT_CODE: dict[Result, int] = {
    Result.SUCCESS: 0,
    Result.INPUT_MISSING: 1,
    Result.OUTPUT_MISSING: 2,
    Result.STDOUT_MISSING: 4,
    Result.SIGNAL: 8,
    Result.RESOURCE_EXHAUSTION: 16,
    Result.MAX_END_TIME: 24,
    Result.UNKNOWN: 32,
    Result.FORSAKEN: 40,
    Result.MAX_RETRIES: 48,
    Result.MAX_WALL_TIME: 56,
    Result.RMONITOR_ERROR: 64,
    Result.OUTPUT_TRANSFER_ERROR: 72,
    Result.FIXED_LOCATION_MISSING: 80,
    Result.CANCELLED: 88,
    Result.LIBRARY_EXIT: 96,
    Result.SANDBOX_EXHAUSTION: 104,
    Result.MISSING_LIBRARY: 112,
}

#: ``VINE_RESULT_SUCCESS`` ... and the other constants TaskVine programs name
CONSTANTS: dict[str, int] = {f"VINE_RESULT_{r.name}": code for r, code in RESULT_CODE.items()}
CONSTANTS |= {
    "VINE_DEFAULT_PORT": DEFAULT_PORT,
    "VINE_RANDOM_PORT": 0,
    "VINE_WAIT_FOREVER": -1,
    "VINE_TASK_UNKNOWN": 0,
    "VINE_TASK_READY": 1,
    "VINE_TASK_RUNNING": 2,
    "VINE_TASK_WAITING_RETRIEVAL": 3,
    "VINE_TASK_RETRIEVED": 4,
    "VINE_TASK_DONE": 5,
    "VINE_TASK_CANCELED": 6,
    "VINE_SCHEDULE_UNSET": 0,
    "VINE_SCHEDULE_FCFS": 1,
    "VINE_SCHEDULE_FILES": 2,
    "VINE_SCHEDULE_TIME": 3,
    "VINE_SCHEDULE_RAND": 4,
    "VINE_SCHEDULE_WORST": 5,
    "VINE_SCHEDULE_DISK": 6,
    "VINE_CACHE_LEVEL_TASK": 0,
    "VINE_CACHE_LEVEL_WORKFLOW": 1,
    "VINE_CACHE_LEVEL_WORKER": 2,
    "VINE_CACHE_LEVEL_FOREVER": 3,
}


def result_of(outcome: Outcome | None) -> Result | None:
    return None if outcome is None else RESULT_OF.get(outcome, Result.UNKNOWN)


def ran(outcome: Outcome | None) -> bool:
    """The task ran to its end (TaskVine's ``completed()``): its result is "success"."""
    return result_of(outcome) == Result.SUCCESS
