"""The Python client's workloads, for bramble and ipyparallel alike (same code, the import
differs): ``python bench.py bramble|ipyparallel`` prints one JSON line of figures.

- map: ``lview.map(lambda x: x**10, range(10_000))``, chunksize 1, items per second;
- apply: ``c[:].apply_sync(lambda: 0)`` on 4 engines, median of 100 warm calls, ms;
- scatter/execute/gather: 64 items scattered, ``y = [i**10 for i in x]`` executed, ``y``
  gathered, median of 40 warm rounds, ms;
- memory: resident memory per engine (with its bramble-worker for bramble), MiB, read from
  /proc after the runs.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time


def median_ms(f, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        f()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def rss_mib(pattern: str) -> list[float]:
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            out.append(kib / 1024)
        except (OSError, StopIteration):
            pass
    return out


def main(impl: str) -> None:
    ipp = importlib.import_module("bramble" if impl == "bramble" else "ipyparallel")
    kwargs = {"n": 4} if impl == "bramble" else {"n": 4, "log_level": 40}
    with ipp.Cluster(**kwargs) as c:
        c.wait_for_engines(4, timeout=120)
        dv = c[:]
        lview = c.load_balanced_view()
        for _ in range(10):
            dv.apply_sync(lambda: 0)
        lview.map_sync(lambda x: x, range(200))
        started = time.perf_counter()
        out = lview.map_sync(lambda x: x**10, range(10_000))
        rate = 10_000 / (time.perf_counter() - started)
        assert out[:3] == [0, 1, 1024]
        apply = median_ms(lambda: dv.apply_sync(lambda: 0), 100)

        def round_trip() -> None:
            dv.scatter("x", range(64), block=True)
            dv.execute("y = [i**10 for i in x]", block=True)
            dv.gather("y", block=True)

        round_trip()
        seg = median_ms(round_trip, 40)
        if impl == "bramble":
            engines = rss_mib("python.*-c.*bramble's Python engine")
            workers = rss_mib("bramble-worker --bundle")
            per_engine = (sum(engines) + sum(workers)) / max(len(engines), 1)
        else:
            engines = rss_mib("ipyparallel.engine")
            per_engine = sum(engines) / max(len(engines), 1)
    print(json.dumps({"impl": impl, "map": rate, "apply": apply, "seg": seg, "mem": per_engine}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main(sys.argv[1])
