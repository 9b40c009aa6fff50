"""Views, as in ipyparallel: a ``DirectView`` runs work on chosen engines (each engine runs its
work in the order it was given, and keeps its namespace); a ``LoadBalancedView`` spreads work
over the engines as the host's scheduler places it (thermal-aware by default)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

from . import _engine, error
from .asyncresult import AsyncMapResult, AsyncResult, concatenate

__all__ = ["DirectView", "LoadBalancedView", "View"]

#: This client's Python (major, minor): engines of another version refuse the work.
PYTHON = sys.version_info[:2]


def _name(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _partition(seq: Any, parts: int) -> list[Any]:
    """``seq`` in ``parts`` contiguous slices (``seq[lo:hi]``, so a range stays a range and
    an array a view); the first ``len % parts`` get one more, as ipyparallel cuts them."""
    n = len(seq)
    base, extra = divmod(n, parts)
    out, lo = [], 0
    for k in range(parts):
        hi = lo + base + (1 if k < extra else 0)
        out.append(seq[lo:hi])
        lo = hi
    return out


class View:
    """What both views share: flags (``block``, ``timeout``, ``retries``) and submission."""

    def __init__(self, client: Any, targets: Any = None) -> None:
        self.client = client
        self._targets = targets
        self.block = False
        self.timeout: float | None = None
        self.retries = 0

    def _submit(
        self,
        ar: AsyncResult,
        kind: str,
        f: Any,
        args: tuple = (),
        kwargs: dict | None = None,
        items: list[bytes] | None = None,
        targets: list[int] | None = None,
        chunksize: int = 1,
        retries: int | None = None,
        ordered: bool = True,
    ) -> None:
        """Submits the job of ``ar``; the native call fills in its ``job`` and total."""
        function = _engine.pack((f, tuple(args), dict(kwargs or {})))
        self.client._native.submit(
            ar,
            kind,
            function,
            items or [],
            targets,
            chunksize,
            self.retries if retries is None else retries,
            self.timeout,
            PYTHON,
            _name(f) if not isinstance(f, str) else f.split(":", 1)[-1],
            ordered,
        )

    @staticmethod
    def _result(ar: AsyncResult, block: bool) -> Any:
        """What a call returns: the result of a blocking one (``ar`` has waited for it), else
        ``ar``."""
        return ar.get() if block else ar

    def apply(self, f: Callable, *args: Any, **kwargs: Any) -> Any:
        """Calls ``f(*args, **kwargs)``; blocks if ``self.block``."""
        return self._apply(f, args, kwargs, self.block)

    def apply_async(self, f: Callable, *args: Any, **kwargs: Any) -> AsyncResult:
        """Calls ``f(*args, **kwargs)``; returns an ``AsyncResult`` at once."""
        return self._apply(f, args, kwargs, False)

    def apply_sync(self, f: Callable, *args: Any, **kwargs: Any) -> Any:
        """Calls ``f(*args, **kwargs)`` and waits for the result."""
        return self._apply(f, args, kwargs, True)

    def _apply(self, f: Callable, args: tuple, kwargs: dict, block: bool) -> Any:
        raise NotImplementedError

    def map_async(self, f: Callable, *seqs: Any, **kwargs: Any) -> AsyncMapResult:
        return self.map(f, *seqs, block=False, **kwargs)

    def map_sync(self, f: Callable, *seqs: Any, **kwargs: Any) -> Any:
        return self.map(f, *seqs, block=True, **kwargs)

    def map(self, f: Callable, *seqs: Any, block: bool | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def remote(self, block: bool | None = None, **flags: Any) -> Callable[[Callable], Any]:
        """Decorator: calling the function calls it remotely (``apply``)."""

        def decorate(f: Callable) -> Callable:
            @functools.wraps(f)
            def call(*args: Any, **kwargs: Any) -> Any:
                b = self.block if block is None else block
                return self._apply(f, args, kwargs, b)

            return call

        return decorate

    def parallel(self, block: bool | None = None, **flags: Any) -> Callable[[Callable], Any]:
        """Decorator: calling the function with sequences maps it over them."""

        def decorate(f: Callable) -> Callable:
            @functools.wraps(f)
            def call(*seqs: Any) -> Any:
                return self.map(f, *seqs, block=self.block if block is None else block)

            call.map = call  # type: ignore[attr-defined]
            return call

        return decorate


class DirectView(View):
    """Work on these engines: ``c[:]``, ``c[::2]``, ``c[[0, 2]]``, ``c[0]`` (one engine: its
    results are single values, not lists)."""

    def __init__(self, client: Any, targets: Any) -> None:
        super().__init__(client, targets)
        self._single = isinstance(targets, int)

    @property
    def targets(self) -> list[int] | int:
        if self._single:
            return self._targets
        return self._engines()

    def _engines(self) -> list[int]:
        """The engine ids this view means now (``c[:]`` means every engine up)."""
        return self._ids() or self.client.ids

    def _ids(self) -> list[int] | None:
        """The engines to send work to: ``None`` for every usable engine (the host knows
        which; ``c[:]`` costs no extra round trip)."""
        t = self._targets
        if isinstance(t, int):
            return [t]
        if t is None or t == "all" or t == slice(None):
            return None
        if isinstance(t, slice):
            return self.client.ids[t]
        return list(t)

    def _run(
        self,
        f: Any,
        args: tuple = (),
        kwargs: dict | None = None,
        fname: str | None = None,
        reconstruct: Callable | None = None,
        result_class: type = AsyncResult,
        wait: bool | Callable[[Any], Any] = False,
        **extra: Any,
    ) -> AsyncResult:
        """Runs ``f`` once on each engine of the view (see ``AsyncResult._launch``)."""
        ar = result_class(
            self.client,
            fname or _name(f),
            single=self._single,
            reconstruct=reconstruct,
            **extra,
        )
        return ar._launch(
            lambda a: self._submit(a, "apply", f, args, kwargs, None, self._ids(), retries=0), wait
        )

    def _execute(
        self,
        code: str,
        on_output: Callable | None = None,
        wait: bool | Callable[[Any], Any] = False,
    ) -> AsyncResult:
        """``execute``, streaming output to ``on_output(engine, stream, text)``."""
        return self._run(
            "bramble:execute",
            (code,),
            fname="execute",
            reconstruct=lambda results: None,
            wait=wait,
            on_output=on_output,
        )

    def _apply(self, f: Callable, args: tuple, kwargs: dict, block: bool) -> Any:
        return self._result(self._run(f, args, kwargs, wait=block), block)

    def execute(self, code: str, silent: bool = True, block: bool | None = None) -> AsyncResult:
        """Runs ``code`` in each engine's namespace; returns the AsyncResult (after waiting if
        blocking). The value of a final expression is in ``ar.execute_result``."""
        block = self.block if block is None else block
        ar = self._execute(code, wait=block)
        self._result(ar, block)  # raises the engines' errors
        return ar

    def run(self, filename: str, block: bool | None = None) -> AsyncResult:
        """Runs a local Python file in each engine's namespace."""
        with open(filename) as f:
            code = f.read()
        block = self.block if block is None else block
        args = (code, os.path.basename(filename))
        ar = self._run("bramble:run", args, fname="run", wait=block)
        self._result(ar, block)
        return ar

    def push(self, ns: dict, block: bool | None = None) -> Any:
        """Sets names in each engine's namespace."""
        block = self.block if block is None else block
        return self._result(self._run("bramble:push", (dict(ns),), fname="push", wait=block), block)

    def pull(self, names: str | list[str], block: bool | None = None) -> Any:
        """Gets a name (or a list of names) from each engine's namespace."""
        block = self.block if block is None else block
        return self._result(self._run("bramble:pull", (names,), fname="pull", wait=block), block)

    def __setitem__(self, key: str, value: Any) -> None:
        self.push({key: value}, block=True)

    def __getitem__(self, key: str) -> Any:
        return self.pull(key, block=True)

    def update(self, ns: dict) -> None:
        self.push(ns, block=True)

    def get(self, key: str) -> Any:
        return self.pull(key, block=True)

    def _cut(self, ar: AsyncResult, f: Any, args: tuple, cut: Callable[[int], list[bytes]]) -> None:
        """Submits ``ar``'s scatter job of one part per engine, ``cut(engines)`` making the
        parts. ``c[:]`` cuts for the engines the host listed within the last second; should
        that list be out of date (the host refuses the job), it asks again and cuts again."""

        def submit(targets: list[int]) -> None:
            self._submit(ar, "scatter", f, args, None, cut(len(targets)), targets, retries=0)

        targets = self._ids()
        if targets is not None:
            return submit(targets)
        targets = self.client._recent_ids()
        try:
            submit(targets)
        except error.BrambleError:
            if self.client.ids == targets:
                raise
            submit(self.client._recent_ids())

    def scatter(self, key: str, seq: Any, block: bool | None = None, flatten: bool = False) -> Any:
        """Gives each engine a contiguous slice of ``seq`` as ``key``. Blocking returns
        None, as ipyparallel's does."""

        def cut(engines: int) -> list[bytes]:
            parts = _partition(seq, engines)
            if flatten:
                parts = [p[0] if len(p) == 1 else p for p in parts]
            return [_engine.pack(({key: part},)) for part in parts]

        block = self.block if block is None else block
        ar = AsyncResult(self.client, "scatter")
        ar._launch(lambda a: self._cut(a, "bramble:push", (), cut), block)
        self._result(ar, block)
        return None if block else ar

    def gather(self, key: str, block: bool | None = None) -> Any:
        """Each engine's ``key``, put back together in target order (numpy arrays
        concatenated)."""
        block = self.block if block is None else block
        ar = self._run(
            "bramble:pull",
            (key,),
            fname="gather",
            reconstruct=concatenate,
            result_class=AsyncMapResult,
            wait=block,
            flatten=True,
        )
        return self._result(ar, block)

    def map(self, f: Callable, *seqs: Any, block: bool | None = None, **kwargs: Any) -> Any:
        """``f`` over the sequences, one contiguous block per engine (not load-balanced);
        the results come back as one list."""
        args = list(zip(*seqs))

        def cut(engines: int) -> list[bytes]:
            return [_engine.pack((chunk,)) for chunk in _partition(args, engines)]

        block = self.block if block is None else block
        ar = AsyncMapResult(self.client, _name(f), reconstruct=concatenate, flatten=True)
        ar._launch(lambda a: self._cut(a, "bramble:map", (f,), cut), block)
        return self._result(ar, block)

    def clear(self, block: bool | None = None) -> Any:
        """Empties each engine's namespace."""
        block = self.block if block is None else block
        return self._result(self._run("bramble:clear", fname="clear", wait=block), block)

    def __repr__(self) -> str:
        return f"<DirectView {self._targets if self._single else self._engines()}>"


class LoadBalancedView(View):
    """Work placed by the host's scheduler on whichever engine will finish it first (the
    thermal policy: hot, throttled and slow Pis get less)."""

    def _apply(self, f: Callable, args: tuple, kwargs: dict, block: bool) -> Any:
        ar = AsyncResult(self.client, _name(f), single=True)
        items = [_engine.pack(())]
        ar._launch(lambda a: self._submit(a, "map", f, args, kwargs, items, self._targets), block)
        return self._result(ar, block)

    def map(
        self,
        f: Callable,
        *seqs: Any,
        block: bool | None = None,
        chunksize: int = 1,
        ordered: bool = True,
        return_exceptions: bool = False,
        **flags: Any,
    ) -> Any:
        """``f`` over the sequences, one item per call, ``chunksize`` items per task; results
        in input order (or, iterating with ``ordered=False``, as they finish)."""
        block = self.block if block is None else block
        items = [_engine.pack(args) for args in zip(*seqs)]
        ar = AsyncMapResult(
            self.client, _name(f), ordered=ordered, return_exceptions=return_exceptions
        )

        def submit(a: AsyncResult) -> None:
            self._submit(a, "map", f, (), None, items, self._targets, chunksize, ordered=ordered)

        ar._launch(submit, block)
        return self._result(ar, block)

    def imap(self, f: Callable, *seqs: Any, ordered: bool = True, **kwargs: Any) -> Any:
        """An iterator over ``f``'s results as they arrive."""
        return iter(self.map(f, *seqs, block=False, ordered=ordered, **kwargs))

    def __repr__(self) -> str:
        return f"<LoadBalancedView {self._targets or 'all'}>"
