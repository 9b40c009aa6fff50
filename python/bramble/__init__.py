"""bramble: run Python on a cluster of Raspberry Pis the way ipyparallel does.

    import bramble as ipp
    c = ipp.Client()
    c[:].apply_sync(lambda: "Hello World")

The names and behaviour follow ipyparallel's (``Client``, ``DirectView``,
``LoadBalancedView``, ``AsyncResult``, ``RemoteError``, ``%px``), so code ports by changing
the import. Work runs in warm Python engines inside each Pi's ``bramble-worker``; the host
schedules it around hot, throttled and slow Pis and keeps every job in its job store.
"""

from ._native import __version__
from .asyncresult import AsyncMapResult, AsyncResult
from .client import Client
from .cluster import Cluster
from .error import (
    BrambleError,
    CompositeError,
    EngineError,
    NoEnginesRegistered,
    RemoteError,
    TaskAborted,
    TaskTimeout,
)
from .view import DirectView, LoadBalancedView

__all__ = [
    "AsyncMapResult",
    "AsyncResult",
    "BrambleError",
    "Client",
    "Cluster",
    "CompositeError",
    "DirectView",
    "EngineError",
    "LoadBalancedView",
    "NoEnginesRegistered",
    "RemoteError",
    "TaskAborted",
    "TaskTimeout",
    "__version__",
]
