"""AsyncResult (a concurrent.futures.Future with ipyparallel's API), errors as the client sees
them, interrupts, and the GIL released while waiting."""

from __future__ import annotations

import _thread
import concurrent.futures
import faulthandler
import os
import signal
import threading
from concurrent.futures import Future

import cloudpickle
import pytest
from signals import Gate, Signals, through
from signals import signal as reached

import bramble as ipp

# The engines cannot import this test module: send its functions by value (as a user does
# for a module of their own that is not installed on the Pis).
cloudpickle.register_pickle_by_value(__import__(__name__))


def held(gate: str, signals: str, x: object) -> object:
    """An item that says it started (with its engine's pid), then waits for the gate."""
    reached(signals, str(os.getpid()))
    return through(gate, x)


def busy(seconds: float) -> float:
    """An item that runs for ``seconds``: its run time is what ``serial_time`` and ``elapsed``
    add up (nothing waits on it)."""
    import time

    time.sleep(seconds)
    return seconds


def test_async_result_is_a_future_with_ipyparallels_api(
    client: ipp.Client, capsys, gate: Gate, signals: Signals
) -> None:
    lview = client.load_balanced_view()
    ar = lview.map_async(lambda x, g=gate.path, s=signals.path: held(g, s, x), [1] * 8)
    assert isinstance(ar, Future) and isinstance(ar, ipp.AsyncMapResult)
    assert len(ar) == 8
    # Four items held at once: one on each engine, and none can finish before the gate opens.
    assert len(set(signals.wait(4))) == 4
    assert not ar.ready() and ar.progress == 0
    with pytest.raises(RuntimeError):
        ar.successful()
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.01)
    assert ar.wait(timeout=0.01) is False
    gate.open()
    ar.wait_interactive(interval=0.1)
    shown = capsys.readouterr().out
    assert "8/   8 tasks finished" in shown and shown.rstrip().endswith("done")
    assert ar.ready() and ar.successful() and ar.progress == 8
    assert ar.get() == [1] * 8 and ar.result() == [1] * 8
    # (Which engine's copy of an item came first is the scheduler's: it re-runs stragglers.)
    assert set(ar.engine_id) <= {0, 1, 2, 3}
    assert repr(ar) == "<AsyncMapResult(<lambda>): finished>"
    timed = lview.map_async(busy, [0.3] * 8)
    timed.get()
    assert timed.elapsed >= 0.3 and timed.serial_time >= 8 * 0.3


def test_iteration_gives_results_as_they_arrive(
    client: ipp.Client, gate: Gate, signals: Signals
) -> None:
    lview = client.load_balanced_view()
    # Item 0 waits for the gate: unordered, the others come first.
    first = lambda x, g=gate.path: through(g, x) if x == 0 else x  # noqa: E731
    ar = lview.map_async(first, [0, 1, 2, 3], ordered=False)
    assert next(iter(ar)) in (1, 2, 3) and not ar.ready()
    gate.open(1)
    assert sorted(ar) == [0, 1, 2, 3]
    # In order, item 0 comes first although it finishes last (released only once the others
    # have returned).
    last = lambda x, g=gate.path, s=signals.path: through(g, x) if x == 0 else reached(s) or x  # noqa: E731
    ar = lview.map_async(last, [0, 1, 2])
    signals.wait(2)
    gate.open(1)
    assert list(ar) == [0, 1, 2]


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


def test_abort_cancels_queued_and_running_work(
    client: ipp.Client, gate: Gate, signals: Signals
) -> None:
    lview = client.load_balanced_view()
    ar = lview.map_async(lambda x, g=gate.path, s=signals.path: held(g, s, x), range(8))
    signals.wait(4)  # four run, four wait
    ar.abort()
    with pytest.raises(ipp.CompositeError) as e:
        ar.get(timeout=20)
    assert {en for en, _, _, _ in e.value.elist} == {"TaskAborted"}
    assert client[:].apply_sync(lambda: "free again") == ["free again"] * 4
    assert client.jobs()[-2]["state"] == "cancelled", client.jobs()[-3:]


def test_ctrl_c_stops_a_blocking_call_and_cancels_its_job(
    client: ipp.Client, gate: Gate, signals: Signals
) -> None:
    # A real SIGINT, as Ctrl-C or a Jupyter interrupt sends (the kernel may deliver it to any
    # thread of the process), once every engine runs the call.
    def interrupt_when(started: int, how: object) -> threading.Thread:
        def run() -> None:
            signals.wait(started)
            how()  # type: ignore[operator]

        t = threading.Thread(target=run)
        t.start()
        return t

    t = interrupt_when(4, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        client[:].apply_sync(held, gate.path, signals.path, 1)
    t.join()
    job = client.jobs()[-1]
    assert job["command"] == "python: held" and job["state"] == "cancelled"
    assert client[:].apply_sync(lambda: 1) == [1] * 4, "the engines were interrupted"
    # An interrupt without a signal (some front ends raise it with interrupt_main).
    t = interrupt_when(1, _thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        client.load_balanced_view().apply_sync(held, gate.path, signals.path, 1)
    t.join()
    assert client.jobs()[-1]["state"] == "cancelled"


def test_the_gil_is_released_while_waiting(
    client: ipp.Client, gate: Gate, signals: Signals
) -> None:
    # The call returns only once another Python thread has run and opened the gate: were the
    # GIL held while waiting, that thread could not run, and the watchdog (a C thread, which
    # needs no GIL) would end the test run with every thread's traceback.
    ran = []

    def opener() -> None:
        signals.wait(4)
        ran.append(sum(range(1000)))
        gate.open()

    t = threading.Thread(target=opener)
    t.start()
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        assert client[:].apply_sync(held, gate.path, signals.path, 7) == [7] * 4
    finally:
        faulthandler.cancel_dump_traceback_later()
    t.join()
    assert ran == [499500]


def test_many_pending_results_need_no_thread_each_and_complete_as_futures(
    cluster: ipp.Cluster, gate: Gate
) -> None:
    client = cluster.connect_client_sync()
    # Every engine waits for the gate, so everything below is still pending when counted.
    blockers = client[:].apply_async(through, gate.path, "went")
    threads = threading.active_count()
    lview = client.load_balanced_view()
    ars = [lview.apply_async(lambda i=i: i * i) for i in range(100)]
    assert threading.active_count() <= threads + 1, "one pump thread for every job"
    assert not any(ar.ready() for ar in ars)
    # A done-callback may submit more work (the pump calls it).
    chained: Future = Future()
    ars[0].add_done_callback(lambda ar: chained.set_result(lview.apply_async(lambda: "next")))
    gate.open(4)
    assert blockers.get(timeout=30) == ["went"] * 4
    done = {ar.result() for ar in concurrent.futures.as_completed(ars, timeout=30)}
    assert done == {i * i for i in range(100)}
    assert chained.result(timeout=30).get(timeout=30) == "next"
    # Closing the client fails what is still pending, at once (the gate's closing at the end
    # of the test lets the engines go).
    pending = client[:].apply_async(through, gate.path)
    client.close()
    with pytest.raises(ConnectionError, match="client closed"):
        pending.get(timeout=5)
