"""Where a job's graphs run, resolved once per job: a distributed Client or a local scheduler.

A job's ``execute`` takes what a caller has at hand (``SchedulerLike``: a scheduler name such
as ``"threads"``, a ``distributed.Client``, None for the active client or Dask's default, or a
``Scheduler`` already resolved) and turns it into a ``Scheduler`` once, before any check or
pass; everything below it (the cluster checks, the passes, ``graph.compute.compute``)
receives that ``Scheduler`` and asks it, never the environment again, whether it runs on a
cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Scheduler", "SchedulerLike", "resolve"]


@dataclass(frozen=True)
class Scheduler:
    """A resolved scheduler: a distributed ``client``, or else a local scheduler's ``name``.

    Attributes
    ----------
    client : distributed.Client or None
        The cluster's client; None when the graphs run in this process.
    name : str or None
        With no client: the name of one of Dask's local schedulers (``"threads"``,
        ``"sync"``, ``"processes"``).
    """

    client: Client | None = None
    name: str | None = None

    @property
    def distributed(self) -> bool:
        """Whether the graphs run on a cluster (tasks in other processes)."""
        return self.client is not None


#: What a job's ``execute`` accepts as ``scheduler``.
SchedulerLike = Union[Scheduler, "Client", str, None]


def resolve(scheduler: SchedulerLike | Any) -> Scheduler:
    """The ``Scheduler`` of what a caller gave: itself; a Client; a local scheduler's name;
    or, for None, the active distributed client if there is one, else Dask's configured
    scheduler (``dask.config`` "scheduler"), else threads (Dask's default for delayed)."""
    if isinstance(scheduler, Scheduler):
        return scheduler
    if isinstance(scheduler, str):
        return Scheduler(name=scheduler)
    from distributed import Client

    if isinstance(scheduler, Client):
        return Scheduler(client=scheduler)
    if scheduler is None:
        from distributed import get_client

        try:
            return Scheduler(client=get_client())
        except ValueError:
            import dask

            # no client: Dask's configured scheduler, else its default for delayed graphs,
            # named, so that no later compute asks again
            return Scheduler(name=dask.config.get("scheduler", None) or "threads")
    raise TypeError(f"a scheduler is a name, a distributed.Client or None, not "
                    f"{type(scheduler).__name__}")
