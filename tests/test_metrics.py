"""The Prometheus collector, scraped over real HTTP after known work, against ``stats()``."""

from __future__ import annotations

import http.client
import threading

import pysqlite3.dbapi2 as dbapi
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from _items import Boom, create_items, failing, insert  # noqa: E402
from sqlite_storemgr import DatabaseLockedError, StoreManager  # noqa: E402
from sqlite_storemgr.metrics import FIGURES, StoreManagerCollector  # noqa: E402
from sqlite_storemgr.uri import STRATEGIES  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def scrape():
    """scrape(registry) -> {(metric name, database): value}, over HTTP from a real server."""
    servers = []

    def scrape(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        if not servers:
            servers.append(start_http_server(0, addr="127.0.0.1", registry=registry))
        server, _ = servers[0]
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200
            text = response.read().decode()
        finally:
            connection.close()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("storemgr_"):
                    assert set(sample.labels) == {"database", "strategy"}
                    samples[sample.name, sample.labels["database"]] = (
                        sample.value, sample.labels["strategy"])
        return samples

    yield scrape
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def exported_name(key: str) -> str:
    figure = FIGURES[key]
    return f"storemgr_{figure.metric}" + ("_total" if figure.counter else "")


def do_known_work(manager: StoreManager, name: str) -> None:
    """5 units committed, 2 failed, under any strategy."""
    manager.submit_write(create_items, name=name).result(timeout=10)
    for index in range(4):
        manager.submit_write(insert(f"kept {index}"), name=name).result(timeout=10)
    for index in range(2):
        assert isinstance(manager.submit_write(failing(f"gone {index}"), name=name)
                          .exception(timeout=10), Boom)


def test_a_scrape_exports_every_databases_stats_with_labels(tmp_path, scrape):
    manager = StoreManager()
    registry = CollectorRegistry()
    registry.register(StoreManagerCollector(manager))
    try:
        for strategy in STRATEGIES:
            manager.configure(strategy, f"sqlite:{tmp_path / strategy}.db?strategy={strategy}")
            do_known_work(manager, strategy)
        expected = {strategy: manager.stats(strategy) for strategy in STRATEGIES}
        samples = scrape(registry)
    finally:
        manager.close(timeout=10)
    for strategy, stats in expected.items():
        assert stats["units_committed"] == 5 and stats["units_failed"] == 2
        numeric = {key for key in stats if key != "strategy"}
        assert numeric <= set(FIGURES), f"stats() keys no metric exports: {numeric - set(FIGURES)}"
        exported = {key: samples[exported_name(key), strategy] for key in numeric}
        assert exported == {key: (pytest.approx(float(stats[key])), strategy)
                            for key in numeric}
    writer_only = {"batches", "queue_depth", "mean_batch", "largest_batch", "writer_restarts"}
    for strategy in ("mutex", "threadlocal"):  # no writer: those figures are absent, not 0
        assert not {(exported_name(key), strategy) for key in writer_only} & set(samples)
    assert samples[exported_name("batches"), "queue"][0] >= 1


def test_lock_waits_and_locked_errors_are_counted(tmp_path, scrape):
    path = tmp_path / "locked.db"
    manager = StoreManager()
    manager.configure("locked", f"sqlite:{path}?strategy=threadlocal&on_locked=retry&timeout=0.3")
    registry = CollectorRegistry()
    registry.register(StoreManagerCollector(manager))
    try:
        manager.submit_write(create_items).result(timeout=10)
        holder = dbapi.connect(str(path), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        try:
            errors = []
            threads = [threading.Thread(target=lambda: errors.append(
                manager.submit_write(insert("never")).exception(timeout=10)))
                for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        finally:
            holder.rollback()
            holder.close()
        stats = manager.stats("locked")
        samples = scrape(registry)
    finally:
        manager.close(timeout=10)
    assert [type(error) for error in errors] == [DatabaseLockedError] * 3
    assert stats["locked_errors"] == 3
    # Three threads waited about 0.3 s each at once: the sum is over threads.
    assert stats["lock_wait_seconds"] >= 3 * 0.25
    assert samples[exported_name("locked_errors"), "locked"] == (3.0, "threadlocal")
    assert samples[exported_name("lock_wait_seconds"), "locked"][0] == pytest.approx(
        stats["lock_wait_seconds"])
    assert samples[exported_name("retries"), "locked"][0] == stats["retries"]


def test_a_closed_manager_exports_nothing_and_the_scrape_still_works(tmp_path, scrape):
    manager = StoreManager()
    manager.configure("main", f"sqlite:{tmp_path / 'closed.db'}")
    registry = CollectorRegistry()
    registry.register(StoreManagerCollector(manager))
    do_known_work(manager, "main")
    assert scrape(registry)[exported_name("units_committed"), "main"] == (5.0, "queue")
    manager.close(timeout=10)
    assert scrape(registry) == {}


def test_two_collectors_need_two_namespaces_in_one_registry(tmp_path):
    first, second = StoreManager(), StoreManager()
    registry = CollectorRegistry()
    registry.register(StoreManagerCollector(first))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(StoreManagerCollector(second))
    registry.register(StoreManagerCollector(second, namespace="jobs"))
    second.configure("main", f"sqlite:{tmp_path / 'jobs.db'}")
    try:
        do_known_work(second, "main")
        assert registry.get_sample_value(
            "jobs_units_committed_total", {"database": "main", "strategy": "queue"}) == 5.0
        assert registry.get_sample_value(
            "storemgr_units_committed_total", {"database": "main", "strategy": "queue"}) is None
    finally:
        first.close()
        second.close(timeout=10)
