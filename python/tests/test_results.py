"""AsyncResult (a concurrent.futures.Future with ipyparallel's API), errors as the client sees
them, interrupts, and the GIL released while waiting."""

from __future__ import annotations

import _thread
import concurrent.futures
import os
import signal
import threading
import time
from concurrent.futures import Future

import cloudpickle
import pytest

import bramble as ipp

# The engines cannot import this test module: send its functions by value (as a user does
# for a module of their own that is not installed on the Pis).
cloudpickle.register_pickle_by_value(__import__(__name__))


def slow(x: float) -> float:
    import time

    time.sleep(x)
    return x


def test_async_result_is_a_future_with_ipyparallels_api(client: ipp.Client, capsys) -> None:
    lview = client.load_balanced_view()
    ar = lview.map_async(slow, [0.3] * 8)
    assert isinstance(ar, Future) and isinstance(ar, ipp.AsyncMapResult)
    assert len(ar) == 8
    assert not ar.ready() and ar.progress < 8
    with pytest.raises(RuntimeError):
        ar.successful()
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.01)
    assert ar.wait(timeout=0.01) is False
    ar.wait_interactive(interval=0.1)
    shown = capsys.readouterr().out
    assert "8/   8 tasks finished" in shown and shown.rstrip().endswith("done")
    assert ar.ready() and ar.successful() and ar.progress == 8
    assert ar.get() == [0.3] * 8 and ar.result() == [0.3] * 8
    assert ar.elapsed >= 0.3 and ar.serial_time >= 8 * 0.3
    assert sorted(set(ar.engine_id)) == [0, 1, 2, 3]
    assert repr(ar) == "<AsyncMapResult(slow): finished>"


def test_iteration_gives_results_as_they_arrive(client: ipp.Client) -> None:
    lview = client.load_balanced_view()
    # Item 0 is slow: in order, nothing comes before it; unordered, the fast ones come first.
    ar = lview.map_async(slow, [1.0, 0.0, 0.0, 0.0], ordered=False)
    first = next(iter(ar))
    assert first == 0.0 and not ar.ready()
    ar = lview.map_async(slow, [0.6, 0.0, 0.0])
    started = time.monotonic()
    assert next(iter(ar)) == 0.6 and time.monotonic() - started >= 0.5


def test_output_per_target_and_display(client: ipp.Client, capsys) -> None:
    dv = client[:]
    ar = dv.execute("import sys\nprint('hi from', 1)\nprint('oops', file=sys.stderr)")
    ar.get()
    assert ar.stdout == ["hi from 1\n"] * 4
    assert ar.stderr == ["oops\n"] * 4
    ar.display_outputs()
    out = capsys.readouterr()
    assert "[stdout:0] hi from 1" in out.out and "[stdout:3] hi from 1" in out.out
    assert "[stderr:2] oops" in out.err
    single = client[1].execute("print('one')", block=True)
    assert single.stdout == "one\n" and single.engine_id == 1


def test_an_exception_from_each_engine_is_shown_together(client: ipp.Client) -> None:
    dv = client[:]
    dv.scatter("n", [0, 1, 2, 3], block=True)
    with pytest.raises(ipp.CompositeError) as e:
        dv.execute("1 / 0 if n[0] % 2 else int('x')", block=True)
    err = e.value
    assert len(err.elist) == 4
    assert [ei["engine_id"] for _, _, _, ei in err.elist] == [0, 1, 2, 3]
    assert {en for en, _, _, _ in err.elist} == {"ValueError", "ZeroDivisionError"}
    lines = str(err).splitlines()
    assert lines[1] == "[0:execute] ValueError: invalid literal for int() with base 10: 'x'"
    assert lines[2] == "[1:execute] ZeroDivisionError: division by zero"
    tb = "\n".join(err.render_traceback())
    assert 'File "<px>", line 1' in tb and "ZeroDivisionError" in tb
    with pytest.raises(ipp.RemoteError) as one:
        err.raise_exception(1)
    assert one.value.ename == "ZeroDivisionError"
    # One engine: the RemoteError itself.
    with pytest.raises(ipp.RemoteError) as single:
        client[0].apply_sync(lambda: {}["missing"])
    assert str(single.value) == "[0:<lambda>] KeyError: 'missing'"
    results = client[:].apply_async(lambda: 1 / 0).get(return_exceptions=True)
    assert all(isinstance(r, ipp.RemoteError) for r in results)


def test_abort_cancels_queued_and_running_work(client: ipp.Client) -> None:
    lview = client.load_balanced_view()
    ar = lview.map_async(slow, [30] * 8)
    time.sleep(0.3)  # the first four start (not asserted: abort works either way)
    ar.abort()
    with pytest.raises(ipp.CompositeError) as e:
        ar.get(timeout=20)
    assert {en for en, _, _, _ in e.value.elist} == {"TaskAborted"}
    assert client[:].apply_sync(lambda: "free again") == ["free again"] * 4
    assert client.jobs()[-2]["state"] == "cancelled"


def test_ctrl_c_stops_a_blocking_call_and_cancels_its_job(client: ipp.Client) -> None:
    # A real SIGINT, as Ctrl-C or a Jupyter interrupt sends: the kernel may deliver it to any
    # thread of the process.
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client[:].apply_sync(slow, 30)
    assert time.monotonic() - started < 20
    job = client.jobs()[-1]
    assert job["command"] == "python: slow" and job["state"] == "cancelled"
    assert client[:].apply_sync(lambda: 1) == [1] * 4, "the engines were interrupted"
    # An interrupt without a signal (some front ends raise it with interrupt_main).
    threading.Timer(0.5, _thread.interrupt_main).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.load_balanced_view().apply_sync(slow, 30)
    assert time.monotonic() - started < 20
    assert client.jobs()[-1]["state"] == "cancelled"


def test_the_gil_is_released_while_waiting(client: ipp.Client) -> None:
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    t = threading.Thread(target=count)
    t.start()
    client[:].apply_sync(slow, 0.5)
    stop.set()
    t.join()
    assert ticks >= 20, f"another thread ran only {ticks} times in 0.5 s"


def wait_for(path: str) -> str:
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def test_many_pending_results_need_no_thread_each_and_complete_as_futures(
    cluster: ipp.Cluster, tmp_path
) -> None:
    client = cluster.connect_client_sync()
    gate = str(tmp_path / "open")
    # Every engine waits for the gate, so everything below is still pending when counted.
    blockers = client[:].apply_async(wait_for, gate)
    threads = threading.active_count()
    lview = client.load_balanced_view()
    ars = [lview.apply_async(lambda i=i: i * i) for i in range(100)]
    assert threading.active_count() <= threads + 1, "one pump thread for every job"
    assert not any(ar.ready() for ar in ars)
    # A done-callback may submit more work (the pump calls it).
    chained: Future = Future()
    ars[0].add_done_callback(lambda ar: chained.set_result(lview.apply_async(lambda: "next")))
    open(gate, "w").close()
    assert blockers.get(timeout=30) == [gate] * 4
    done = {ar.result() for ar in concurrent.futures.as_completed(ars, timeout=30)}
    assert done == {i * i for i in range(100)}
    assert chained.result(timeout=30).get(timeout=30) == "next"
    # Closing the client fails what is still pending, at once.
    os.remove(gate)
    pending = client[:].apply_async(wait_for, gate)
    client.close()
    with pytest.raises(ConnectionError, match="client closed"):
        pending.get(timeout=5)
    open(gate, "w").close()  # let the engines go
