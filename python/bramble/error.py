"""Errors, named and shaped like ipyparallel's (``ipyparallel.error``), so that code catching
them ports by changing the import."""

from __future__ import annotations

from typing import Any

from ._native import BrambleError

__all__ = [
    "BrambleError",
    "CompositeError",
    "EngineError",
    "NoEnginesRegistered",
    "RemoteError",
    "TaskAborted",
    "TaskTimeout",
]


class KernelError(Exception):
    """Base of the errors raised for work on engines."""


class EngineError(KernelError):
    """The engine died while running the task (its namespace was lost), or the task could not
    be run there at all."""


class TaskAborted(KernelError):
    """The task was cancelled (``abort()``, Ctrl-C, ``bramble cancel``) before it finished."""


class TaskTimeout(KernelError):
    """The task ran past its ``timeout`` and was interrupted."""


class NoEnginesRegistered(KernelError):
    """No engine is up (``Client.wait_for_engines`` waits for some)."""


class RemoteError(KernelError):
    """An exception raised on an engine: its type name, message and traceback, with the
    engine it came from. Prints as ``[0:apply] ZeroDivisionError: division by zero``."""

    ename: str | None = None
    evalue: str | None = None
    traceback: str | None = None
    engine_info: dict[str, Any]

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: str | None,
        engine_info: dict[str, Any] | None = None,
    ) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_info = engine_info or {}
        self.args = (ename, evalue)

    def __repr__(self) -> str:
        engine = self.engine_info.get("engine_id", " ")
        return f"<{type(self).__name__}[{engine}]:{self.ename}({self.evalue})>"

    def __str__(self) -> str:
        return f"{self._engine_str(self.engine_info)} {self.ename}: {self.evalue}"

    @staticmethod
    def _engine_str(engine_info: dict[str, Any]) -> str:
        if not engine_info:
            return "[Engine Exception]"
        return f"[{engine_info.get('engine_id')}:{engine_info.get('method')}]"

    def render_traceback(self) -> list[str]:
        """The remote traceback as lines, headed by the engine."""
        return [self._engine_str(self.engine_info)] + (
            self.traceback or "No traceback available"
        ).splitlines()

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of the local traceback.
        return self.render_traceback()

    def print_traceback(self) -> None:
        print("\n".join(self.render_traceback()))


class CompositeError(RemoteError):
    """Several engines raised: every error, shown together (the first few in full)."""

    tb_limit = 4

    def __init__(self, message: str, elist: list[tuple[str, str, str | None, dict[str, Any]]]):
        Exception.__init__(self, message, elist)
        self.msg = message
        self.elist = elist
        self.args = tuple(e[0] for e in elist)
        self.engine_info = {}

    def __str__(self) -> str:
        s = str(self.msg)
        for en, ev, _tb, ei in self.elist[: self.tb_limit]:
            s += f"\n{self._engine_str(ei)} {en}: {ev}"
        if len(self.elist) > self.tb_limit:
            s += f"\n.... {len(self.elist) - self.tb_limit} more exceptions ..."
        return s

    def __repr__(self) -> str:
        return f"CompositeError({len(self.elist)})"

    def render_traceback(self, excid: int | None = None) -> list[str]:
        lines: list[str] = []
        chosen = self.elist[: self.tb_limit] if excid is None else [self.elist[excid]]
        for _en, _ev, tb, ei in chosen:
            lines.append(self._engine_str(ei) + ":")
            lines.extend((tb or "No traceback available").splitlines())
            lines.append("")
        if excid is None and len(self.elist) > self.tb_limit:
            lines.append(f"... {len(self.elist) - self.tb_limit} more exceptions ...")
        return lines

    def _render_traceback_(self) -> list[str]:
        return self.render_traceback()

    def raise_exception(self, excid: int = 0) -> None:
        """Raises one of the errors as a RemoteError."""
        en, ev, tb, ei = self.elist[excid]
        raise RemoteError(en, ev, tb, ei)


def collect(results: list[Any], method: str) -> list[Any]:
    """Raises a CompositeError when any result is an error; returns the results otherwise."""
    elist = []
    for r in results:
        if isinstance(r, CompositeError):
            elist.extend(r.elist)
        elif isinstance(r, RemoteError):
            elist.append((r.ename, r.evalue, r.traceback, r.engine_info))
        elif isinstance(r, KernelError):
            elist.append((type(r).__name__, str(r), None, getattr(r, "engine_info", {})))
    if elist:
        raise CompositeError(f"one or more exceptions raised in: {method}", elist)
    return results
