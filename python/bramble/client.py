"""``Client``: the connection to a bramble host, shaped like ipyparallel's ``Client``."""

from __future__ import annotations

import time
import warnings
from typing import Any

from ._native import NativeClient
from .error import NoEnginesRegistered
from .pump import Pump
from .view import PYTHON, DirectView, LoadBalancedView

__all__ = ["Client"]

#: How long an engine list is used for cutting a scatter before the host is asked again.
_RECENT = 1.0


class Client:
    """Connects like the ``bramble`` CLI: the default profile's client bundle, a bundle file
    (``Client("laptop.json")`` or ``bundle=``), or ``BRAMBLE_BUNDLE``. The first Client made
    inside IPython registers the ``%px`` magics."""

    _magics_registered = False

    def __init__(
        self,
        url_file: str | None = None,
        profile: str | None = None,
        bundle: str | None = None,
        timeout: float = 10,
        **_ignored: Any,
    ) -> None:
        self._native = NativeClient(profile, bundle or url_file, float(timeout))
        self._pump = Pump(self._native)
        self._known: tuple[float, list[int]] = (-1e9, [])
        self._warned_versions: set[tuple[int, int]] = set()
        self._register_magics()

    # -- engines -------------------------------------------------------------------------------

    def engines(self) -> list[dict[str, Any]]:
        """Every engine of the connected workers, usable or not, with its worker, slot,
        Python version and, when it cannot run work, why."""
        out = []
        for engine, worker, name, slot, version, problem, draining in self._native.engines():
            out.append(
                {
                    "engine": engine,
                    "worker": worker,
                    "name": name,
                    "slot": slot,
                    "python": ".".join(map(str, version)) if version else None,
                    "problem": problem,
                    "draining": draining,
                }
            )
        return out

    @property
    def ids(self) -> list[int]:
        """The ids of the engines that can run work, ascending."""
        up = []
        for engine, _w, name, _s, version, problem, draining in self._native.engines():
            if problem is None and version is not None and not draining:
                up.append(engine)
                self._check_version(name, version)
        up.sort()
        self._known = (time.monotonic(), up)
        return up

    def _recent_ids(self) -> list[int]:
        """``ids`` as the host gave them within the last second: a scatter must know how
        many engines to cut for, and asking every time would cost a round trip."""
        at, ids = self._known
        return ids if time.monotonic() - at < _RECENT else self.ids

    def _check_version(self, name: str, version: tuple[int, int, int]) -> None:
        if tuple(version[:2]) != PYTHON and tuple(version[:2]) not in self._warned_versions:
            self._warned_versions.add(tuple(version[:2]))
            warnings.warn(
                f"worker {name} runs Python {'.'.join(map(str, version))} and this client "
                f"Python {PYTHON[0]}.{PYTHON[1]}: its engines will refuse this client's work "
                "(cloudpickle needs the same major.minor version on both sides)",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.ids)

    def wait_for_engines(
        self, n: int | None = None, timeout: float = -1, block: bool = True
    ) -> None:
        """Waits until at least ``n`` engines are up (``TimeoutError`` after ``timeout``
        seconds; ``-1``: no limit)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        want = 1 if n is None else n
        while len(self.ids) < want:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.ids)} engines are up, not {want}")
            time.sleep(0.1)

    # -- views ---------------------------------------------------------------------------------

    def __getitem__(self, key: int | slice | list[int]) -> DirectView:
        """A DirectView on these engines: ``c[0]``, ``c[:]``, ``c[::2]``, ``c[[0, 2]]``."""
        if isinstance(key, int):
            if key not in self.ids:
                raise NoEnginesRegistered(f"engine {key} is not up (engines: {self.ids})")
        elif not isinstance(key, slice):
            key = list(key)
        return DirectView(self, key)

    def direct_view(self, targets: Any = "all") -> DirectView:
        """A DirectView on ``targets`` (``"all"``: every engine up when work is sent)."""
        return DirectView(self, targets)

    def load_balanced_view(self, targets: list[int] | None = None) -> LoadBalancedView:
        """A LoadBalancedView over every engine (or the workers of ``targets``)."""
        return LoadBalancedView(self, list(targets) if targets is not None else None)

    # -- the rest ------------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job on the host (Python ones and the CLI's), as ``bramble jobs`` lists them."""
        keys = ("job", "kind", "state", "total", "done", "failed", "elapsed_ms", "command")
        return [dict(zip(keys, row)) for row in self._native.jobs()]

    def close(self) -> None:
        """Disconnects (jobs keep running on the host); results still pending fail with
        ``ConnectionError``."""
        self._native.close()
        self._pump.close("the client closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _register_magics(self) -> None:
        if Client._magics_registered:
            return
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        if shell is None:
            return
        from .magics import ParallelMagics

        shell.register_magics(ParallelMagics(shell, self))
        Client._magics_registered = True
