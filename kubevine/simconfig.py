"""What the simulated workers are (:class:`SimConfig`), how long their tasks take
(:data:`Duration`) and what they counted (:class:`SimStats`): the simulator's settings and
results, apart from :mod:`kubevine.simworker` so that the bench and the tests that read a
simulator's stats file need only this."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from kubevine.protocol import Assignment

#: how long a task "runs", given its assignment (seconds; 0: it ends in the turn it arrives)
Duration = Callable[[Assignment], float]


def instant(_: Assignment) -> float:
    return 0.0


def parse_duration(text: str, seed: int | None = None) -> Duration:
    """``0`` (instant), ``const:S``, ``exp:MEAN`` or ``uniform:LO:HI`` (seconds)."""
    kind, _, rest = text.partition(":")
    rng = random.Random(seed)
    try:
        if kind in ("0", "instant") and not rest:
            return instant
        if kind == "const":
            s = float(rest)
            return lambda _a: s
        if kind == "exp":
            lam = 1.0 / float(rest)
            return lambda _a: rng.expovariate(lam)
        if kind == "uniform":
            lo, hi = (float(x) for x in rest.split(":"))
            return lambda _a: rng.uniform(lo, hi)
    except ValueError:
        pass
    raise ValueError(f"duration {text!r}: expected 0, const:S, exp:MEAN or uniform:LO:HI")


@dataclass
class SimConfig:
    """What the simulated workers are and how they behave."""

    manager: str  # host:port
    token: str
    workers: int = 10
    cores: float = 1  # each worker's resources, as ``kubevine worker --cores ...``
    memory: int = 4096
    disk: int = 16384
    prefix: str = "sim"  # worker ids are <prefix>-<i>
    node: str = "simnode"  # the node every simulated worker says it is on (one cache group each)
    heartbeat_interval: float = 2.0
    duration: Duration = instant
    library_start: float = 0.0  # seconds from InstallLibrary to ready
    run_functions: bool = False  # compute PythonTasks' and calls' values (else they return None)
    probe_every: float = 0.0  # seconds between probes of each probing worker (0: no probes)
    probers: int = 0  # workers that probe (the first ones)
    encrypt: bool = False


@dataclass
class SimStats:
    """Counters of one simulator (times are epoch seconds, so processes can be compared)."""

    workers: int = 0
    registered: int = 0  # sessions welcomed now
    welcomes: int = 0  # welcomes received (a reconnect counts again)
    refused: int = 0
    dispatches: int = 0  # Dispatch messages
    tasks: int = 0  # assignments of commands and PythonTasks
    calls: int = 0  # assignments of FunctionCalls
    results: int = 0  # attempts finished here (each reported in the next update, again after a new welcome)
    kills: int = 0
    acked_alone: int = 0  # results acknowledged by an UpdateAck message of their own
    acked_on_dispatch: int = 0  # ... by the acknowledgements a Dispatch carried
    libraries_ready: int = 0  # instances that said ready
    all_registered: float | None = None  # when every worker had been welcomed once
    first_dispatch: float | None = None
    last_dispatch: float | None = None
    last_result: float | None = None
    probe_rtts: list[float] = field(default_factory=list)  # seconds
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, assigned, results)

    def to_json(self, *, series: bool = True) -> str:
        """As JSON; without ``series`` (samples, probe round trips), cheap to write often."""
        d = asdict(self) if series else {k: v for k, v in vars(self).items() if k not in _SERIES}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> SimStats:
        d = json.loads(text)
        d["samples"] = [tuple(s) for s in d.get("samples", [])]
        return cls(**d)


_SERIES = ("samples", "probe_rtts")
