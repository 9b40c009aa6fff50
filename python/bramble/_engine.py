"""bramble's Python engine: a warm interpreter in one worker slot, with its own namespace.

The worker (``bramble-worker``) carries this file inside its binary and starts it as
``python3 -c <this file>``: a Pi needs nothing but ``python3`` and ``cloudpickle``. It must
run on every Python a Pi may have (3.9 and up), so it uses nothing newer.

The engine talks to its worker in frames on the pipes it was started with, after moving them
to private descriptors: fd 0 then reads ``/dev/null``, and fds 1 and 2 become pipes that the
engine drains and forwards as OUTPUT frames. So whatever an item prints (from Python, from C
code, from child processes) is captured and streamed per item, and a ``print`` can never
corrupt the protocol.

Frames are a u32 little-endian length, then one kind byte and the body (u64 little-endian):

    worker -> engine  LOAD   job:u64 envelope        a job's (function, args, kwargs)
                      RUN    job:u64 has_item:u8 [envelope]   one item: extra positional args
                      FORGET job:u64                  the job ended
    engine -> worker  HELLO  major:u8 minor:u8 micro:u8 cloudpickle-version
                      OUTPUT stream:u8 bytes          1 stdout, 2 stderr
                      DONE   status:u8 envelope       0 returned, 1 raised, 2 interrupted

An envelope is how bramble ships Python objects: a u32 count, then per frame a u32 length and
the bytes: first a pickle protocol 5 stream (cloudpickle), then its out-of-band buffers, so
numpy data is never copied into the pickle. The client package uses the same functions
(``pack``, ``unpack``) from this module.

SIGINT interrupts the running item (the worker sends it to cancel or time out an item); an
interrupt that arrives when no item runs (one that raced with the item's end) is ignored.
"""

import ast
import builtins
import os
import select
import signal
import struct
import sys
import threading
import traceback
import types

LOAD, RUN, FORGET = 1, 2, 3
HELLO, OUTPUT, DONE = 10, 11, 12
RETURNED, RAISED, INTERRUPTED = 0, 1, 2

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# -- envelopes ------------------------------------------------------------------------------


def dumps(obj):
    """The frames of ``obj``: a cloudpickle protocol 5 stream, then its out-of-band buffers."""
    import cloudpickle

    buffers = []
    main = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [main] + [b.raw() for b in buffers]


def pack(obj):
    """``obj`` as one envelope (bytes)."""
    frames = dumps(obj)
    out = bytearray(_U32.pack(len(frames)))
    for f in frames:
        out += _U32.pack(len(f))
        out += f
    return bytes(out)


def unpack(data):
    """The object in an envelope. Buffers are views of ``data`` (no copy); pass a bytearray
    for arrays that may be written to."""
    import pickle

    view = memoryview(data)
    (count,) = _U32.unpack_from(view, 0)
    pos = 4
    frames = []
    for _ in range(count):
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        frames.append(view[pos : pos + n])
        pos += n
    if not frames:
        raise ValueError("an empty envelope")
    return pickle.loads(frames[0], buffers=frames[1:])


# -- helpers the client names by string (``"bramble:push"``) --------------------------------


def _push(ns, mapping):
    ns.update(mapping)


def _pull(ns, names):
    if isinstance(names, str):
        return ns[names]
    return [ns[n] for n in names]


def _execute(ns, code, filename="<px>"):
    """Runs ``code`` in ``ns``; a final expression's value is returned (``Out[i:n]``)."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), ns)
    if last is not None:
        return eval(compile(last, filename, "eval"), ns)
    return None


def _run(ns, code, filename):
    exec(compile(code, filename, "exec"), ns)


def _clear(ns):
    ns.clear()
    ns.update(fresh_namespace())


def _map(ns, f, chunk):
    f = bind(f, ns)
    return [f(*args) for args in chunk]


HELPERS = {
    "bramble:push": _push,
    "bramble:pull": _pull,
    "bramble:execute": _execute,
    "bramble:run": _run,
    "bramble:clear": _clear,
    "bramble:map": _map,
}


def fresh_namespace():
    return {"__name__": "__main__", "__builtins__": builtins}


def bind(f, ns):
    """A function defined in the client's ``__main__`` sees this engine's namespace first,
    then what cloudpickle captured with it (ipyparallel's behaviour: ``%px y = f(x)`` and
    ``dview.apply(lambda: x)`` read the engine's ``x``)."""
    if not isinstance(f, types.FunctionType) or f.__module__ != "__main__":
        return f
    g = dict(f.__globals__)
    g.update(ns)
    bound = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)
    bound.__kwdefaults__ = f.__kwdefaults__
    bound.__dict__.update(f.__dict__)
    return bound


# -- the engine -----------------------------------------------------------------------------


class Engine:
    def __init__(self):
        # The protocol moves to private descriptors; fds 0, 1, 2 are the user's.
        self.inp = os.dup(0)
        self.out = os.dup(1)
        self.fatal = os.fdopen(os.dup(2), "w", buffering=1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self.pipes = {}
        for fd, stream in ((1, 1), (2, 2)):
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.dup2(w, fd)
            os.close(w)
            self.pipes[r] = stream
        self.lock = threading.Lock()  # one frame at a time on the pipe
        self.draining = threading.Lock()  # output forwarded in the order it was printed
        self.buf = bytearray()
        self.ns = fresh_namespace()
        self.jobs = {}
        self.running = False  # user code runs: SIGINT interrupts it
        signal.signal(signal.SIGINT, self.on_sigint)
        try:
            import faulthandler

            faulthandler.enable(file=self.fatal, all_threads=False)
        except Exception:
            pass
        threading.Thread(target=self.pump, name="bramble-output", daemon=True).start()

    # frames ---------------------------------------------------------------------------------

    def on_sigint(self, signum, frame):
        # Raises only inside `run`'s try, while user code runs: never in the protocol.
        if self.running:
            raise KeyboardInterrupt

    def send(self, kind, *parts):
        body = b"".join(parts)
        header = _U32.pack(1 + len(body)) + bytes([kind])
        with self.lock:
            self.write_all(header + body)

    def write_all(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.out, view)
            view = view[n:]

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = os.read(self.inp, max(1 << 16, n - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def frame(self):
        (n,) = _U32.unpack(self.read_exact(4))
        body = self.read_exact(n)
        return body[0], body[1:]

    # output ---------------------------------------------------------------------------------

    def pump(self):
        """Forwards what is printed as it is printed."""
        fds = list(self.pipes)
        while True:
            ready, _, _ = select.select(fds, [], [])
            self.drain(ready)

    def drain(self, fds):
        with self.draining:
            for fd in fds:
                while True:
                    try:
                        data = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    self.send(OUTPUT, bytes([self.pipes[fd]]), data)

    def flush_output(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        self.drain(list(self.pipes))

    # work -----------------------------------------------------------------------------------

    def serve(self):
        import cloudpickle

        major, minor, micro = sys.version_info[:3]
        self.send(HELLO, bytes([major, minor, micro]), cloudpickle.__version__.encode())
        while True:
            try:
                kind, body = self.frame()
            except EOFError:
                return
            job = _U64.unpack_from(body, 0)[0]
            if kind == LOAD:
                # Unpickled once per job (not per item), from a writable copy: numpy keeps an
                # array read-only if its buffer was, and pushed arrays should be writable.
                try:
                    self.jobs[job] = unpack(bytearray(body[8:]))
                except BaseException as e:
                    self.jobs[job] = e
            elif kind == FORGET:
                self.jobs.pop(job, None)
            elif kind == RUN:
                item = body[9:] if body[8] else None
                status, value = self.run(job, item)
                self.flush_output()
                self.send(DONE, bytes([status]), value)

    def run(self, job, item):
        try:
            payload = self.jobs.get(job)
            if payload is None:
                raise RuntimeError(f"job {job}'s function never reached this engine")
            if isinstance(payload, BaseException):
                raise payload  # it did not unpickle here (a module missing on this Pi?)
            f, args, kwargs = payload
            extra = tuple(unpack(bytearray(item))) if item is not None else ()
            call = HELPERS[f] if isinstance(f, str) else bind(f, self.ns)
            if isinstance(f, str):
                extra = (self.ns, *args, *extra)
            else:
                extra = (*args, *extra)
            self.running = True
            result = call(*extra, **kwargs)
            self.running = False
            try:
                return RETURNED, pack(result)
            except Exception as e:
                raise TypeError(f"the return value cannot be pickled: {e}") from e
        except KeyboardInterrupt:
            self.running = False
            return INTERRUPTED, pack(None)
        except BaseException as e:  # SystemExit too: the engine lives on
            self.running = False
            return RAISED, pack(self.error(e))

    def error(self, e):
        """What the client needs to raise a RemoteError: type, message, traceback (without
        this engine's own frames), and the exception itself when it pickles."""
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_globals.get("__file__") == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(e), e, tb))
        info = {"ename": type(e).__name__, "evalue": str(e), "traceback": text}
        try:
            pack(e)
            info["exception"] = e
        except Exception:
            pass
        return info


def main():
    engine = Engine()
    try:
        engine.serve()
    except Exception:
        traceback.print_exc(file=engine.fatal)
        sys.exit(3)


__file__ = globals().get("__file__", "<bramble-engine>")

if __name__ == "__main__" and sys.argv[:1] == ["-c"]:
    main()
