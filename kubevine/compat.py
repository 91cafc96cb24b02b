"""TaskVine's Dask entry point under TaskVine's names: ``DaskVine`` and ``DaskVineDag``.

A TaskVine program makes ``m = vine.DaskVine(port)`` and computes with
``dask.compute(x, scheduler=m.get)`` or ``m.get(dsk, keys, **options)``. Here ``DaskVine``
is a :class:`~kubevine.client.Manager` (so everything a manager does it does too) whose
``get`` takes DaskVine's options: those with a meaning in kubevine act (``worker_transfers``
/ ``lazy_transfers``, ``resources``, ``lib_resources``, ``lib_modules``, ``retries``,
``task_mode``, ``max_pending``, ``checkpoint_fn``, ``extra_files``, ``lib_extra_functions``,
``progress_disable``, ``prune_depth``), the others (about TaskVine's own engine: categories,
environments, wrappers) are accepted and named once in the log. ``checkpoint_fn(dag, key)``
gets a :class:`DaskVineDag` of the graph.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from kubevine.client import Manager


class DaskVine(Manager):
    """A Manager whose ``get`` is DaskVine's (``dask.compute(x, scheduler=m.get)``)."""

    def __call__(self, dsk: Any, keys: Any, **options: Any) -> Any:
        return self.get(dsk, keys, **options)


class DaskVineDag:
    """The graph as DaskVine's ``checkpoint_fn`` sees it: a key's children are the keys it is
    computed from; its depth is the longest chain of children below it (0 for none)."""

    def __init__(self, deps: Mapping[Any, Sequence[Any]]) -> None:
        self._deps = deps

    def get_children(self, key: Any) -> set[Any]:
        return set(self._deps.get(key, ()))

    def get_parents(self, key: Any) -> set[Any]:
        return {k for k, ds in self._deps.items() if key in ds}

    @functools.cache  # noqa: B019 - one dag per get(); the cache goes with it
    def depth_of(self, key: Any) -> int:
        depth, stack = 0, [(key, 0)]
        seen: dict[Any, int] = {}
        while stack:  # iterative: a chain of 100,000 nodes is fine
            k, d = stack.pop()
            if seen.get(k, -1) >= d:
                continue
            seen[k] = d
            depth = max(depth, d)
            stack.extend((c, d + 1) for c in self._deps.get(k, ()))
        return depth
