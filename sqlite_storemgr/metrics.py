"""A Prometheus collector for `StoreManager.stats()` (``pip install 'sqlite_storemgr[metrics]'``).

Every database the manager has configured is exported at each scrape, labelled
``database`` (its name) and ``strategy``::

    from prometheus_client import REGISTRY, start_http_server
    from sqlite_storemgr.metrics import StoreManagerCollector

    REGISTRY.register(StoreManagerCollector(manager))  # the default manager if None
    start_http_server(9464, addr="127.0.0.1")

The README's "Metrics and stats" says what each figure counts.  A closed
manager exports nothing; a scrape never fails because of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import ManagerClosedError

if TYPE_CHECKING:
    from .manager import StoreManager

LABELS = ("database", "strategy")


class Figure(NamedTuple):
    """How one numeric key of ``stats()`` is exported."""

    metric: str  # the name after the namespace; a counter's exposition adds ``_total``
    counter: bool
    help: str


# Every numeric key ``stats()`` returns, under any strategy (``strategy`` is a label).
FIGURES: dict[str, Figure] = {
    "units_committed": Figure("units_committed", True, "Units of work committed"),
    "units_failed": Figure("units_failed", True, "Units of work that failed (rolled back)"),
    "retries": Figure("retries", True, "Re-runs of a unit or batch after a busy error"),
    "locked_errors": Figure("locked_errors", True,
                            "DatabaseLockedError raised: the write lock not had within timeout"),
    "lock_wait_seconds": Figure("lock_wait_seconds", True,
                                "Time spent waiting for the write lock, summed over threads"),
    "batches": Figure("batches", True, "Group commits run by the writer thread"),
    "writer_restarts": Figure("writer_restarts", True,
                              "Writer threads that died (the next submit starts a new one)"),
    "queue_depth": Figure("queue_depth", False, "Units waiting in the writer's queue now"),
    "oldest_wait_seconds": Figure("oldest_wait_seconds", False,
                                  "How long the oldest queued unit has waited, now"),
    "mean_batch": Figure("mean_batch_units", False, "Mean units per group commit"),
    "largest_batch": Figure("largest_batch_units", False, "Most units in one group commit"),
}


class StoreManagerCollector(Collector):
    """Exports ``manager.stats(name)`` of every configured database at each scrape."""

    def __init__(self, manager: StoreManager | None = None, namespace: str = "storemgr"):
        if manager is None:
            from . import default_manager
            manager = default_manager()
        self.manager = manager
        self.namespace = namespace

    def _families(self) -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
        return {key: (CounterMetricFamily if figure.counter else GaugeMetricFamily)(
                    f"{self.namespace}_{figure.metric}", figure.help, labels=LABELS)
                for key, figure in FIGURES.items()}

    def describe(self) -> Iterator[Metric]:
        """The metric names, for the registry's duplicate check; reads no stats."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for name in self.manager.names():
            try:
                stats = self.manager.stats(name)
            except ManagerClosedError:
                break
            labels = [name, str(stats["strategy"])]
            for key, family in families.items():
                if key in stats:
                    family.add_metric(labels, float(stats[key]))
        return iter(families.values())
