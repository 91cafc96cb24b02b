"""Resource vectors (cores, memory, disk, gpus) and the arithmetic the scheduler needs.

A task asks for resources, a worker offers them; packing is "does this vector fit in what is
left". Memory and disk are in MB, as in TaskVine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """An amount of each resource kind. Immutable; arithmetic returns new vectors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cores: float = Field(0, ge=0, description="CPU cores")
    memory: int = Field(0, ge=0, description="memory in MB")
    disk: int = Field(0, ge=0, description="sandbox and cache disk in MB")
    gpus: int = Field(0, ge=0, description="GPUs")

    def fits_in(self, other: Resources) -> bool:
        """True when every component of self is at most other's (with float slack on cores)."""
        return (
            self.cores <= other.cores + 1e-9
            and self.memory <= other.memory
            and self.disk <= other.disk
            and self.gpus <= other.gpus
        )

    def __add__(self, other: Resources) -> Resources:
        return Resources.model_construct(
            cores=self.cores + other.cores,
            memory=self.memory + other.memory,
            disk=self.disk + other.disk,
            gpus=self.gpus + other.gpus,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources.model_construct(
            cores=max(0.0, self.cores - other.cores),
            memory=max(0, self.memory - other.memory),
            disk=max(0, self.disk - other.disk),
            gpus=max(0, self.gpus - other.gpus),
        )

    def describe(self) -> str:
        """Human form, e.g. ``2 cores, 512 MB memory``; zero components are left out."""
        parts = [f"{self.cores:g} cores"]
        if self.memory:
            parts.append(f"{self.memory} MB memory")
        if self.disk:
            parts.append(f"{self.disk} MB disk")
        if self.gpus:
            parts.append(f"{self.gpus} gpus")
        return ", ".join(parts)


NONE = Resources()


class Tally:
    """A running sum of resources in use, changed in place.

    The scheduler and the worker add and remove a task's resources several times per
    task; a mutable tally keeps that off the allocation/validation path.
    """

    __slots__ = ("cores", "disk", "gpus", "memory")

    def __init__(self) -> None:
        self.cores = 0.0
        self.memory = 0
        self.disk = 0
        self.gpus = 0

    def add(self, r: Resources) -> None:
        self.cores += r.cores
        self.memory += r.memory
        self.disk += r.disk
        self.gpus += r.gpus

    def remove(self, r: Resources) -> None:
        self.cores = max(0.0, self.cores - r.cores)
        self.memory = max(0, self.memory - r.memory)
        self.disk = max(0, self.disk - r.disk)
        self.gpus = max(0, self.gpus - r.gpus)

    def room_for(self, need: Resources, total: Resources) -> bool:
        """Whether ``need`` fits in ``total`` minus what this tally holds."""
        return (
            need.cores <= total.cores - self.cores + 1e-9
            and need.memory <= total.memory - self.memory
            and need.disk <= total.disk - self.disk
            and need.gpus <= total.gpus - self.gpus
        )

    def snapshot(self) -> Resources:
        return Resources(cores=self.cores, memory=self.memory, disk=self.disk, gpus=self.gpus)
