"""``AsyncResult``: a running job's results as a ``concurrent.futures.Future``, shaped like
ipyparallel's. The client's pump (``pump.py``) fills it in as items finish; the job itself
lives on the host, so a result survives a lost connection or a host restart (the native
client reconnects and resumes)."""

from __future__ import annotations

import itertools
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, Callable

from . import error
from ._engine import unpack

__all__ = ["AsyncMapResult", "AsyncResult"]

#: How long a waiting main thread sleeps before it looks for a Ctrl-C.
_SLICE = 0.1


class AsyncResult(Future):
    """The results of one job: one per target for a direct view's ``apply``, one per item for
    a load-balanced ``map``. ``get()`` waits and returns them (one value for a view on a
    single engine); iterating gives them as they arrive."""

    def __init__(
        self,
        client: Any,
        fname: str,
        single: bool = False,
        ordered: bool = True,
        reconstruct: Callable[[list[Any]], Any] | None = None,
        return_exceptions: bool = False,
        on_output: Callable[[int | None, int, str], None] | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        # Filled in by the native submit (see `_launch`).
        self.job: int | None = None
        self._total = 0
        self._fname = fname
        self._single = single
        self._ordered = ordered
        self._reconstruct = reconstruct
        self._return_exceptions = return_exceptions
        self._on_output = on_output
        self._cond = threading.Condition()
        self._results: dict[int, Any] = {}
        self._arrived: list[int] = []
        self._stdout: dict[int, str] = {}
        self._stderr: dict[int, str] = {}
        self._engines: dict[int, int | None] = {}
        self._ms: dict[int, int] = {}
        self._done = threading.Event()
        self._submitted = time.monotonic()
        self._finished_at: float | None = None
        self._cancelled_job = False

    def _launch(
        self, submit: Callable[[AsyncResult], None], wait: bool | Callable[[Any], Any] = False
    ) -> AsyncResult:
        """Submits the job (``submit(self)``), follows it and, with ``wait``, waits for it
        (``wait`` may be the waiting itself, as ``%px`` does it). The native submit fills in
        ``job`` before it returns, with no Python code in between, so Ctrl-C (or a Jupyter
        interrupt) at any moment after the host took the job cancels it: none is left running
        that the caller never got a result for."""
        try:
            submit(self)
            self._client._pump.follow(self.job, self)
            if callable(wait):
                wait(self)
            elif wait:
                self.wait()
        except KeyboardInterrupt:
            self.abort()
            raise
        return self

    # -- following the job (the client's pump thread) ------------------------------------------

    def _on_event(self, event: tuple) -> bool:
        """Takes one of the job's events; True after its last."""
        kind = event[0]
        if kind == "item":
            self._take_item(*event[1:])
        elif kind == "output":
            if self._on_output is not None:
                _, _index, engine, _worker, stream, data = event
                self._on_output(engine, stream, data.decode("utf-8", "replace"))
        elif kind == "host":  # e.g. its job store stopped being writable, or is again
            warnings.warn(f"bramble host: {event[1]}", RuntimeWarning, stacklevel=1)
        elif kind in ("finished", "cancelled"):
            self._cancelled_job = kind == "cancelled"
            self._finish(None)
            return True
        elif kind == "error":  # the connection is gone for good, or the client closed
            _, message, connection = event
            self._finish(ConnectionError(message) if connection else error.BrambleError(message))
            return True
        return False

    def _take_item(
        self,
        index: int,
        engine: int | None,
        worker: int,
        outcome: str,
        message: str | None,
        stdout: bytes,
        stderr: bytes,
        value: bytearray,
        ms: int,
        truncated: int,
    ) -> None:
        result = self._outcome(index, engine, outcome, message, value)
        with self._cond:
            self._results[index] = result
            self._arrived.append(index)
            self._stdout[index] = stdout.decode("utf-8", "replace")
            self._stderr[index] = stderr.decode("utf-8", "replace")
            self._engines[index] = engine
            self._ms[index] = ms
            self._cond.notify_all()

    def _outcome(
        self, index: int, engine: int | None, outcome: str, message: str | None, value: bytearray
    ) -> Any:
        info = {"engine_id": engine, "method": self._fname}
        try:
            if outcome == "returned":
                return unpack(value)
            if outcome == "raised":
                e = unpack(value)
                return error.RemoteError(e["ename"], e["evalue"], e["traceback"], info)
        except Exception as e:  # a value the client cannot unpickle (a missing module, say)
            return error.RemoteError(type(e).__name__, str(e), None, info)
        where = f"engine {engine}" if engine is not None else "its engine"
        err: error.KernelError
        if outcome == "engine-died":
            err = error.EngineError(
                f"Engine {engine} died while running task {index} of {self._fname}: {message}"
            )
        elif outcome == "cancelled":
            err = error.TaskAborted(f"task {index} of {self._fname} was cancelled")
        elif outcome == "timed-out":
            err = error.TaskTimeout(f"task {index} of {self._fname} timed out on {where}")
        elif outcome == "lost":
            err = error.EngineError(f"task {index} of {self._fname} was lost with its worker")
        else:
            err = error.EngineError(f"task {index} of {self._fname} could not run: {message}")
        err.engine_info = info  # type: ignore[attr-defined]
        return err

    def _finish(self, failure: BaseException | None) -> None:
        with self._cond:
            self._finished_at = time.monotonic()
            if self._cancelled_job:
                for i in range(self._total):
                    self._results.setdefault(i, error.TaskAborted(f"{self._fname} was aborted"))
            self._cond.notify_all()
        if failure is not None and len(self._results) < self._total:
            self.set_exception(failure)
        else:
            results = [self._results[i] for i in range(self._total)]
            try:
                self.set_result(self._final(results))
            except BaseException as e:
                self.set_exception(e)
        self._done.set()

    def _final(self, results: list[Any]) -> Any:
        if self._single:
            r = results[0]
            if isinstance(r, error.KernelError) and not self._return_exceptions:
                raise r
        elif not self._return_exceptions:
            error.collect(results, self._fname)
        return self._shape(results)

    def _shape(self, results: list[Any]) -> Any:
        """The results as the call returns them: one value on one engine, else a list (or
        what the call makes of them: a gather concatenates)."""
        if self._reconstruct is not None:
            return self._reconstruct(results)
        return results[0] if self._single else results

    # -- ipyparallel's API ---------------------------------------------------------------------

    def get(self, timeout: float | None = None, return_exceptions: bool | None = None) -> Any:
        """Waits for the results and returns them (``TimeoutError`` after ``timeout``
        seconds). A remote exception is raised as ``RemoteError`` (several as
        ``CompositeError``) unless ``return_exceptions``."""
        if not self.wait(timeout):
            raise TimeoutError("Result not ready.")
        if return_exceptions and not self._return_exceptions:
            return self._shape([self._results[i] for i in range(self._total)])
        return self.result()

    def wait(self, timeout: float | None = -1) -> bool:
        """Waits until done or ``timeout`` seconds passed (``None`` or ``-1``: no limit);
        returns whether it is done. Ctrl-C interrupts it at once."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        # In slices: an interrupt raised without a signal (`_thread.interrupt_main()`, which
        # some front ends use) shows only once the main thread wakes up.
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if self._done.wait(max(left, 0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def ready(self) -> bool:
        """Whether every result is in."""
        return self._done.is_set()

    def successful(self) -> bool:
        """Whether it finished without an error (``RuntimeError`` if not done yet)."""
        if not self.ready():
            raise RuntimeError("Cannot check successful() if not done.")
        return self.exception() is None

    def abort(self) -> None:
        """Cancels the job on the host: queued items are dropped, running ones interrupted."""
        if self.job is not None and not self.ready():
            self._client._native.cancel(self.job)

    def cancel(self) -> bool:
        """``abort()``, as a Future: True unless it had finished."""
        if self.ready():
            return False
        self.abort()
        return True

    @property
    def progress(self) -> int:
        """How many results are in."""
        return len(self._results)

    @property
    def elapsed(self) -> float:
        """Seconds since submission (until the end, once done)."""
        end = self._finished_at if self._finished_at is not None else time.monotonic()
        return end - self._submitted

    @property
    def wall_time(self) -> float:
        return self.elapsed

    @property
    def serial_time(self) -> float:
        """The items' own run times added up, in seconds."""
        return sum(self._ms.values()) / 1000.0

    def __len__(self) -> int:
        return self._total

    def _per_index(self, source: dict[int, Any]) -> Any:
        values = [source.get(i) for i in range(self._total)]
        return values[0] if self._single else values

    @property
    def execute_result(self) -> Any:
        """Each target's result (for ``execute``: the value of the code's final expression,
        ``None`` without one)."""
        return self._per_index(self._results)

    @property
    def stdout(self) -> Any:
        """What each target (or item) printed on stdout."""
        return self._per_index(self._stdout)

    @property
    def stderr(self) -> Any:
        return self._per_index(self._stderr)

    @property
    def engine_id(self) -> Any:
        """The engine each result came from."""
        return self._per_index(self._engines)

    def __iter__(self) -> Iterator[Any]:
        """Results as they arrive: in order, or in completion order for an unordered map.
        An error is raised at its place."""
        for i in self._indices_as_they_arrive():
            r = self._results[i]
            if isinstance(r, error.KernelError) and not self._return_exceptions:
                raise r
            yield from self._iter_one(r)

    def _iter_one(self, r: Any) -> Iterator[Any]:
        yield r

    def _indices_as_they_arrive(self) -> Iterator[int]:
        given = 0
        while given < self._total:
            with self._cond:
                while True:
                    if self._ordered:
                        ready = given in self._results
                    else:
                        ready = given < len(self._arrived)
                    if ready:
                        break
                    if self._done.is_set():
                        self.result()  # raises what ended the job
                        return
                    self._cond.wait(_SLICE)  # in slices, for Ctrl-C (see `wait`)
                index = given if self._ordered else self._arrived[given]
            given += 1
            yield index

    def display_outputs(self, groupby: str = "type") -> None:
        """Prints what each target printed, as ``[stdout:0] ...`` lines."""
        for i in range(self._total):
            engine = self._engines.get(i, i)
            for name, text, stream in (
                ("stdout", self._stdout.get(i, ""), sys.stdout),
                ("stderr", self._stderr.get(i, ""), sys.stderr),
            ):
                for line in text.splitlines():
                    print(f"[{name}:{engine}] {line}", file=stream)

    def wait_interactive(self, interval: float = 0.1, timeout: float = -1) -> None:
        """Waits, showing progress (``12/64 tasks finished after 3 s``) until done."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while not self.wait(interval):
            if deadline is not None and time.monotonic() > deadline:
                break
            print(
                f"\r{self.progress:4}/{self._total:4} tasks finished after {self.elapsed:4.0f} s",
                end="",
                flush=True,
            )
        print(f"\r{self.progress:4}/{self._total:4} tasks finished after {self.elapsed:4.0f} s")
        print("done" if self.ready() else "still running")

    def __repr__(self) -> str:
        if not self.ready():
            state = "pending"
        else:
            state = "finished" if self.exception() is None else "failed"
        return f"<{type(self).__name__}({self._fname}): {state}>"


class AsyncMapResult(AsyncResult):
    """The results of a map: iterating gives each element (a direct view's chunks flattened),
    in input order, or as they finish with ``ordered=False``."""

    def __init__(self, *args: Any, flatten: bool = False, **kwargs: Any) -> None:
        self._flatten = flatten
        super().__init__(*args, **kwargs)

    def _iter_one(self, r: Any) -> Iterator[Any]:
        if self._flatten:
            yield from r
        else:
            yield r


def concatenate(parts: list[Any]) -> Any:
    """Gathered parts put back together: numpy arrays with ``numpy.concatenate``, anything
    else as one list."""
    numpy = sys.modules.get("numpy")
    if parts and numpy is not None and all(isinstance(p, numpy.ndarray) for p in parts):
        return numpy.concatenate(parts)
    return list(itertools.chain.from_iterable(parts))
