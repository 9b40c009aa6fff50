"""Every row of SPEC §6's table that is a view: DirectView and LoadBalancedView, against a
real local cluster of four engines."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from signals import Gate, through

import bramble as ipp
from bramble.cluster import _bramble


def test_ids_and_views_on_one_some_and_all_engines(client: ipp.Client) -> None:
    assert client.ids == [0, 1, 2, 3]
    assert len(client) == 4
    whoami = "import os\nos.getpid()"
    pids = client[:].execute(whoami, block=True).execute_result
    assert len(set(pids)) == 4, "four engines, four processes"
    # One engine: a single value, not a list.
    assert client[2].apply_sync(lambda: 7) == 7
    assert client[::2].targets == [0, 2]
    assert client[[1, 3]].apply_sync(lambda: "x") == ["x", "x"]
    assert client.direct_view().targets == [0, 1, 2, 3]
    with pytest.raises(ipp.NoEnginesRegistered):
        client[9]


def test_apply_flags_and_async(client: ipp.Client) -> None:
    dv = client[:]
    assert dv.block is False
    ar = dv.apply(lambda a, b=1: a + b, 2, b=3)
    assert isinstance(ar, ipp.AsyncResult)
    assert ar.get() == [5, 5, 5, 5]
    dv.block = True
    assert dv.apply(lambda: "hi") == ["hi"] * 4
    assert isinstance(dv.apply_async(lambda: 1), ipp.AsyncResult)
    assert dv.apply_sync(max, [3, 9, 4]) == [9] * 4


def test_execute_push_pull_and_item_access(client: ipp.Client) -> None:
    dv = client[:]
    dv.push({"a": 10, "b": [1, 2]}, block=True)
    assert dv.pull("a", block=True) == [10] * 4
    assert dv.pull(["a", "b"], block=True) == [[10, [1, 2]]] * 4
    dv["c"] = "see"
    assert dv["c"] == ["see"] * 4
    ar = dv.execute("d = a * 2\nd + 1", block=True)
    assert ar.execute_result == [21] * 4
    assert ar.get() is None
    assert client[1].pull("d", block=True) == 20
    # A function from __main__ (a notebook's, a script's) sees the engine's namespace first,
    # then the globals cloudpickle captured with it.
    main = {"__name__": "__main__", "a": "the client's a", "only_here": "captured"}
    f = eval("lambda: (a, only_here)", main)
    assert dv.apply_sync(f) == [(10, "captured")] * 4


def test_run_a_file(client: ipp.Client, tmp_path) -> None:
    script = tmp_path / "setup.py"
    script.write_text("import math\nroot = math.sqrt(16)\n")
    client[:].run(str(script), block=True)
    assert client[:].pull("root", block=True) == [4.0] * 4


def test_scatter_and_gather_cut_contiguously_and_put_back_in_order(client: ipp.Client) -> None:
    dv = client[:]
    assert dv.scatter("x", range(10), block=True) is None
    parts = dv.pull("x", block=True)
    assert parts == [range(0, 3), range(3, 6), range(6, 8), range(8, 10)]
    dv.execute("y = [i * 2 for i in x]", block=True)
    assert dv.gather("y", block=True) == [i * 2 for i in range(10)]
    ar = dv.gather("y")
    assert isinstance(ar, ipp.AsyncMapResult)
    assert list(ar) == [i * 2 for i in range(10)], "iterating a gather gives the elements"


def test_a_scatter_right_after_engines_change_is_cut_for_the_engines_now(
    cluster: ipp.Cluster, client: ipp.Client
) -> None:
    dv = client[:]
    dv.scatter("x", range(8), block=True)  # the client now knows four engines
    bramble = [_bramble(), "drain", "local-3"]
    env = dict(os.environ, BRAMBLE_HOME=cluster.home)
    try:
        subprocess.run(bramble, env=env, check=True, capture_output=True)
        dv.scatter("x", range(9), block=True)  # the host refuses four parts; cut for three
        assert dv.pull("x", block=True) == [range(0, 3), range(3, 6), range(6, 9)]
        assert dv.gather("x", block=True) == list(range(9))
    finally:
        bramble[1] = "undrain"
        subprocess.run(bramble, env=env, check=True, capture_output=True)
    client.wait_for_engines(4, timeout=30)


def test_numpy_arrays_pushed_scattered_and_gathered_element_wise(client: ipp.Client) -> None:
    dv = client[:]
    big = np.arange(1_000_003, dtype=np.float64)
    dv.scatter("part", big, block=True)
    sizes = dv.execute("part.size", block=True).execute_result
    assert sizes == [250001, 250001, 250001, 250000]
    dv.execute("part *= 2", block=True)  # scattered arrays are writable on the engines
    back = dv.gather("part", block=True)
    assert isinstance(back, np.ndarray) and back.dtype == np.float64
    assert np.array_equal(back, big * 2)
    matrix = np.arange(12, dtype=np.int32).reshape(3, 4)
    dv.push({"m": matrix}, block=True)
    for got in dv.pull("m", block=True):
        assert np.array_equal(got, matrix)
    got = client[0].pull("m", block=True)
    got[0, 0] = 99  # gathered arrays are writable on the client too
    assert got[0, 0] == 99


def test_direct_map_is_one_block_per_engine(client: ipp.Client) -> None:
    dv = client[:]
    out = dv.map_sync(lambda x, y: (x + y, __import__("os").getpid()), range(8), range(8))
    assert [r[0] for r in out] == [2 * i for i in range(8)]
    pids = [r[1] for r in out]
    assert pids[0] == pids[1] and pids[2] == pids[3] and len(set(pids)) == 4


def test_clear_empties_the_namespaces(client: ipp.Client) -> None:
    dv = client[:]
    dv["gone"] = 1
    dv.clear(block=True)
    with pytest.raises(ipp.CompositeError) as e:
        dv.pull("gone", block=True)
    assert "[0:pull] KeyError: 'gone'" in str(e.value)


def test_load_balanced_map_in_order_unordered_and_in_chunks(client: ipp.Client) -> None:
    lview = client.load_balanced_view()
    assert lview.block is False
    lview.block = True
    assert lview.map(lambda x: x**10, range(64)) == [x**10 for x in range(64)]
    assert lview.map(lambda x: x**10, range(64), chunksize=10) == [x**10 for x in range(64)]
    assert lview.map(lambda a, b: a * b, [1, 2, 3], [4, 5, 6]) == [4, 10, 18]
    ar = lview.map_async(lambda x: x, range(20), ordered=False)
    assert sorted(ar) == list(range(20))
    assert list(lview.imap(lambda x: -x, range(5))) == [0, -1, -2, -3, -4]
    assert lview.apply_sync(lambda a: a + 1, 41) == 42


def test_load_balanced_retries_and_timeout(client: ipp.Client, tmp_path, gate: Gate) -> None:
    lview = client.load_balanced_view()
    marker = str(tmp_path / "failed-once")

    def flaky(x: int) -> int:
        import os

        if x == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first try fails")
        return x

    lview.retries = 1
    assert lview.map_sync(flaky, range(6)) == list(range(6))
    lview.retries = 0
    lview.timeout = 0.5
    with pytest.raises(ipp.TaskTimeout):
        lview.apply_sync(through, gate.path)  # a gate that never opens


def test_remote_and_parallel_decorators(client: ipp.Client) -> None:
    dv = client[:]

    @dv.remote(block=True)
    def where() -> int:
        import os

        return os.getpid()

    assert len(set(where())) == 4
    lview = client.load_balanced_view()

    @lview.parallel(block=True)
    def double(x: int) -> int:
        return 2 * x

    assert double(range(5)) == [0, 2, 4, 6, 8]
