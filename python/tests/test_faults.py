"""What goes wrong on a real bramble, from Python: an engine killed mid-task, the host killed
mid-map, workers whose Python cannot run engines, a Python version mismatch."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
from pathlib import Path

import cloudpickle
import pytest
from rig import Rig
from signals import Gate, Signals, through
from signals import signal as reached

import bramble as ipp

cloudpickle.register_pickle_by_value(__import__(__name__))


def wrapper(path: Path, body: str) -> str:
    """An executable shell script standing in for a Python interpreter."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_an_engine_killed_mid_task_fails_it_loses_its_namespace_and_comes_back(
    client: ipp.Client, gate: Gate, signals: Signals
) -> None:
    dv = client[:]
    dv["kept"] = "before"
    # The engine says its pid, then waits at a gate that never opens.
    ar = client[2].apply_async(
        lambda g=gate.path, s=signals.path: through(g, reached(s, str(__import__("os").getpid())))
    )
    (pid,) = signals.wait(1)
    os.kill(int(pid), signal.SIGKILL)
    with pytest.raises(ipp.EngineError) as e:
        ar.get(timeout=30)
    message = str(e.value)
    assert "Engine 2 died" in message and "killed by signal 9" in message
    assert "empty namespace" in message
    # Restarted: it works, and its namespace is new; the other engines kept theirs.
    assert client[2].apply_sync(lambda: 1) == 1
    kept = dv.execute("'kept' in globals()", block=True).execute_result
    assert kept == [True, True, False, True]


def test_a_host_killed_mid_map_restarts_and_every_result_comes_once(
    rig: Rig, tmp_path: Path, gate: Gate
) -> None:
    # leastload: the thermal policy would re-run items held at the gate as stragglers (the
    # first result wins), and this test counts how often each item ran.
    policy = ("--policy", "leastload")
    rig.serve(*policy)
    for i in range(3):
        rig.worker(i)
    c = rig.client()
    c.wait_for_engines(3, timeout=30)
    c[:]["survives"] = "namespace"
    runs, gate_path = tmp_path / "runs", gate.path

    def work(x: int) -> int:
        with open(str(runs), "a") as f:
            f.write(f"{x}\n")
        # Items from 6 on wait at the gate: the host dies while they run or wait.
        return through(gate_path, x * x) if x >= 6 else x * x

    ar = c.load_balanced_view().map_async(work, range(30))
    arrived = iter(ar)
    assert [next(arrived) for _ in range(6)] == [x * x for x in range(6)]
    rig.signal("host", signal.SIGKILL)
    rig.serve(*policy)
    gate.open()
    assert ar.get(timeout=120) == [x * x for x in range(30)]
    ran = runs.read_text().split()
    assert sorted(map(int, ran)) == list(range(30)), f"ran {len(ran)} times for 30 items"
    # The engines lived through it, namespaces and all.
    assert c[:].pull("survives", block=True) == ["namespace"] * 3
    c.close()


def test_workers_whose_python_cannot_run_engines_say_why_and_get_no_python_work(
    rig: Rig, tmp_path: Path
) -> None:
    rig.serve()
    rig.worker(0)
    # No cloudpickle: an isolated interpreter without site-packages.
    isolated = wrapper(tmp_path / "python-isolated", f'exec {sys.executable} -I -S "$@"')
    rig.worker(1, isolated)
    # An allow list without python: no engines.
    config = tmp_path / "worker.toml"
    config.write_text('allow = ["echo"]\n')
    rig.worker(2, None, "--config", str(config))
    c = rig.client()
    c.wait_for_engines(1, timeout=30)

    def problems() -> dict[str, str | None]:
        return {r["name"]: (r["python"] or {}).get("problem") for r in rig.status()}

    rig.wait_until("every probe", lambda: len([p for p in problems().values() if p]) == 2)
    why = problems()
    assert "no cloudpickle" in why["w1"] and "apt install python3-cloudpickle" in why["w1"]
    assert "allow list" in why["w2"] and "worker.toml" in why["w2"]
    assert why["w0"] is None
    table = rig.bramble("status").stdout
    assert "no cloudpickle" in table, table
    engine_of = {e["name"]: e["engine"] for e in c.engines()}
    assert c.ids == [engine_of["w0"]], "only the usable engine is up"
    # Work goes to the usable engine only, and naming another is refused, not hung.
    lview = c.load_balanced_view()
    assert lview.map_sync(lambda x: x + 1, range(10)) == list(range(1, 11))
    with pytest.raises(ipp.BrambleError) as e:
        c.direct_view([engine_of["w1"]]).apply_sync(lambda: 1)
    assert "no cloudpickle" in str(e.value)
    c.close()


def test_a_python_version_mismatch_is_refused_naming_both_versions(
    rig: Rig, tmp_path: Path
) -> None:
    pypy = shutil.which("pypy3")
    assert pypy, "pypy3 is missing: scripts/setup-python.sh installs it"
    site = Path(sys.prefix) / "pypy-site"
    other = wrapper(tmp_path / "pypy", f'PYTHONPATH={site} exec {pypy} "$@"')
    rig.serve()
    rig.worker(0)
    rig.worker(1, other)
    c = rig.client()

    def both_probed() -> bool:
        # One answer for both questions: two engines, and each with its Python known.
        found = {e["name"]: e["python"] for e in c.engines()}
        return found.keys() == {"w0", "w1"} and all(found.values())

    rig.wait_until("both probes", both_probed)
    versions = {e["name"]: e["python"] for e in c.engines()}
    assert versions["w1"].startswith("3.9."), versions
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    with pytest.warns(UserWarning, match="runs Python 3.9"):
        ids = c.ids
    assert ids == [0, 1]
    pypy_engine = next(e["engine"] for e in c.engines() if e["name"] == "w1")
    with pytest.raises(ipp.BrambleError) as e:
        c[pypy_engine].apply_sync(lambda: 1)
    message = str(e.value)
    assert f"runs Python {versions['w1']}" in message and f"client Python {mine}" in message
    # Load-balanced work goes to the engine of the same version.
    out = c.load_balanced_view().map_sync(lambda x: __import__("sys").version_info[:2], range(6))
    assert set(out) == {sys.version_info[:2]}
    c.close()
