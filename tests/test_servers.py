"""The test servers themselves (tests/servers.py): a Dask cluster of real processes runs work
and survives a killed worker."""

from __future__ import annotations

from pathlib import Path

from tests.servers import DaskCluster


def test_a_dask_cluster_of_processes_runs_work_and_loses_a_worker(tmp_path: Path) -> None:
    from distributed import Client

    squares = [x * x for x in range(20)]
    with DaskCluster.start(tmp_path, workers=2) as cluster, Client(cluster.address) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        # A builtin: the workers import it by name (this test module is not importable there).
        assert client.gather(client.map(pow, range(10), [2] * 10)) == squares[:10]
        cluster.kill_worker(0)
        # The scheduler notices and the remaining worker does everything.
        assert client.gather(client.map(pow, range(10, 20), [2] * 10)) == squares[10:]
