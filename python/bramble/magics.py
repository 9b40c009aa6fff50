"""The ``%px`` magics, registered by the first ``Client`` made inside IPython:

- ``%px code`` and ``%%px [-t TARGETS] [-b|-a] [--local] [--out NAME]`` run code on the
  engines; what they print is shown as it is printed, as ``[stdout:0] ...`` lines, and the
  value of a final expression as ``Out[0:3]: ...``.
- ``%pxresult`` shows the last ``%px``'s outputs again.
"""

from __future__ import annotations

import queue
import sys
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .asyncresult import AsyncResult

__all__ = ["ParallelMagics"]


class _LinePrinter:
    """Turns streamed pieces of output into ``[stdout:E] line`` lines, printed by the thread
    that owns the cell (Jupyter routes a cell's output by the thread that prints it). What
    the stream missed (printed before the client started following the job) and unfinished
    lines are printed from the results at the end: every line shows once, whole."""

    def __init__(self) -> None:
        self.pieces: queue.Queue[tuple[int | None, int, str]] = queue.Queue()
        self.partial: dict[tuple[int | None, int], str] = {}
        # The whole lines printed so far, per engine and stream.
        self.printed: dict[tuple[int | None, int], str] = {}

    def __call__(self, engine: int | None, stream: int, text: str) -> None:
        self.pieces.put((engine, stream, text))

    def drain(self) -> None:
        while True:
            try:
                engine, stream, text = self.pieces.get_nowait()
            except queue.Empty:
                break
            key = (engine, stream)
            lines = (self.partial.pop(key, "") + text).split("\n")
            self.partial[key] = lines.pop()
            for line in lines:
                self._print(engine, stream, line)
                self.printed[key] = self.printed.get(key, "") + line + "\n"

    def rest_of(self, ar: AsyncResult) -> None:
        """Prints what each engine printed that the stream did not bring."""
        for outputs, stream in ((ar.stdout, 1), (ar.stderr, 2)):
            engines = ar.engine_id
            if not isinstance(outputs, list):
                outputs, engines = [outputs], [engines]
            for text, engine in zip(outputs, engines):
                done = self.printed.get((engine, stream), "")
                rest = text[len(done) :] if text.startswith(done) else text
                for line in rest.splitlines():
                    self._print(engine, stream, line)

    @staticmethod
    def _print(engine: int | None, stream: int, line: str) -> None:
        name, out = ("stdout", sys.stdout) if stream == 1 else ("stderr", sys.stderr)
        print(f"[{name}:{engine}] {line}", file=out, flush=True)


@magics_class
class ParallelMagics(Magics):
    """``%px``, ``%%px`` and ``%pxresult`` over a client's engines."""

    def __init__(self, shell: Any, client: Any) -> None:
        super().__init__(shell)
        self.client = client
        self.last_result: AsyncResult | None = None

    @magic_arguments()
    @argument("-t", "--targets", default=None, help="engine ids (e.g. 0,2 or 1-3); default all")
    @argument("-b", "--block", action="store_true", default=None, help="wait (the default)")
    @argument("-a", "--noblock", dest="block", action="store_false", help="return at once")
    @argument("--local", action="store_true", help="also run the code here")
    @argument("--out", default=None, help="store the AsyncResult in this variable")
    @line_cell_magic
    def px(self, line: str, cell: str | None = None) -> Any:
        """Runs code on the engines (a line, or the cell of ``%%px``)."""
        if cell is None:
            return self._run(line, None, True)
        args = parse_argstring(self.px, line)
        result = self._run(cell, _targets(args.targets), args.block is not False)
        if args.out:
            self.shell.user_ns[args.out] = self.last_result
        if args.local:
            self.shell.run_cell(cell)
        return result

    @line_magic
    def pxresult(self, line: str = "") -> None:
        """Shows the last %px's outputs and results again."""
        if self.last_result is None:
            print("no %px has run yet")
            return
        self.last_result.display_outputs()
        self._show_values(self.last_result)

    def _run(self, code: str, targets: list[int] | None, block: bool) -> Any:
        view = self.client[targets if targets is not None else slice(None)]
        printer = _LinePrinter()

        def wait(ar: AsyncResult) -> None:
            while not ar.wait(0.05):
                printer.drain()

        # Ctrl-C while waiting cancels the job (AsyncResult._launch).
        ar = view._execute(code, on_output=printer, wait=wait if block else False)
        self.last_result = ar
        if not block:
            return ar
        printer.drain()
        printer.rest_of(ar)
        ar.get()  # raises the engines' errors (shown as remote tracebacks)
        self._show_values(ar)
        return None

    def _show_values(self, ar: AsyncResult) -> None:
        count = getattr(self.shell, "execution_count", 0)
        values = ar.execute_result
        engines = ar.engine_id
        if not isinstance(values, list):
            values, engines = [values], [engines]
        for value, engine in zip(values, engines):
            if value is not None:
                print(f"Out[{engine}:{count}]: {value!r}")


def _targets(spec: str | None) -> list[int] | None:
    """``"0,2,4-6"`` → ``[0, 2, 4, 5, 6]``."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    ids: list[int] = []
    for part in spec.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return ids
