"""Task rate of the peers on the CLI benchmark's workload: ``python rate.py ipyparallel|dask
N CHUNK`` maps a tiny function over ``range(N)`` on four local single-threaded engines, in
chunks of ``CHUNK`` items, and prints one JSON line: items per second, and the version.

- ipyparallel: ``lview.map(f, range(N), chunksize=CHUNK)``;
- Dask: ``client.map`` over chunks of ``CHUNK`` items (``LocalCluster(4 workers, 1 thread
  each)``), gathered; Dask has no chunksize, so a chunk is one task, as it is for the others.

Start-up is not timed: only the map, after one warm-up round.
"""

from __future__ import annotations

import json
import sys
import time


def inc_all(xs):
    return [x + 1 for x in xs]


def ipyparallel_rate(n: int, chunk: int) -> tuple[float, str]:
    import ipyparallel as ipp

    with ipp.Cluster(n=4, log_level=40) as rc:
        lview = rc.load_balanced_view()
        lview.map_sync(lambda x: x + 1, range(100), chunksize=chunk)
        started = time.perf_counter()
        out = lview.map_sync(lambda x: x + 1, range(n), chunksize=chunk)
        took = time.perf_counter() - started
    assert len(out) == n
    return n / took, ipp.__version__


def dask_rate(n: int, chunk: int) -> tuple[float, str]:
    import dask
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=4, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        chunks = lambda m: [range(i, min(i + chunk, m)) for i in range(0, m, chunk)]  # noqa: E731
        client.gather(client.map(inc_all, chunks(100), pure=False))
        started = time.perf_counter()
        out = client.gather(client.map(inc_all, chunks(n), pure=False))
        took = time.perf_counter() - started
    assert sum(len(o) for o in out) == n
    return n / took, dask.__version__


if __name__ == "__main__":
    peer, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate, version = {"ipyparallel": ipyparallel_rate, "dask": dask_rate}[peer](n, chunk)
    print(json.dumps({"peer": peer, "version": version, "n": n, "chunk": chunk, "rate": rate}))
