"""The sandboxed kernel's first code: an audit hook (PEP 578) that reports escape hatches, then the kernel.

The grader starts the kernel as ``python -c <this source> -f connection.json`` (this file is read by the
grader, outside the sandbox: nothing in the sandbox is imported to start it). Before any student code runs,
:func:`install` adds an audit hook, which cannot be removed once added. Whenever code of a notebook cell
(or a function defined in one) triggers an audited event that a submission needs only to get around the
grader (a profiler or tracer, gc introspection, ctypes, constructing code or functions, attribute writes on
functions and code objects, starting processes, another audit hook), the hook writes one JSON line to the file
descriptor the grader passed in (``LECTURELIB_AUDIT_FD``). The grader reads the other end outside the sandbox.

At the graded call the grader's collector raises the audit event ``lecturelib.nonce`` with a fresh nonce; the
hook writes it like any event. If the grader does not receive that nonce, the channel was tampered with
(its descriptor closed or replaced) and the submission is flagged.
"""
import json
import os
import sys

WATCHED_PREFIXES = ("ctypes.", "sys.setprofile", "sys.settrace", "sys._current_frames", "gc.get_",
                    "function.__new__", "code.__new__", "sys.addaudithook", "subprocess.Popen", "os.system",
                    "os.fork", "os.exec", "os.posix_spawn", "os.spawn", "os.kill", "signal.pthread_kill")
WATCHED_SETATTR = ("function", "code")  # CPython audits writes of special attributes only (__code__, ...)


def install(fd: int) -> None:
    """Add the audit hook, writing events of cell code to ``fd``."""
    write, getframe, dumps = os.write, sys._getframe, json.dumps
    busy = []  # re-entrancy guard: the hook itself triggers audited events (sys._getframe)

    def from_cell(depth: int = 2):
        """'file:line' of the code that triggered the event, if it is a notebook cell's (or a function defined in
        one): library code called from a cell does its own things, which are not the submission's."""
        frame = getframe(depth)
        name = frame.f_code.co_filename
        cell = "ipykernel_" in name or name.startswith("<ipython-input-")
        return f"{os.path.basename(name)}:{frame.f_lineno}" if cell else None

    def report(kind: str, detail: str, where: str = "") -> None:
        try:
            write(fd, (dumps({"event": kind, "detail": detail[:200], "where": where}) + "\n").encode())
        except OSError:
            pass  # a closed channel is detected by the grader (the nonce does not arrive)

    def hook(event, args):
        if busy:
            return
        if event == "lecturelib.nonce":
            report(event, str(args[0]))
            return
        watched = event.startswith(WATCHED_PREFIXES) or event in ("exec", "compile") or (
            event in ("object.__setattr__", "object.__delattr__")
            and type(args[0]).__name__ in WATCHED_SETATTR)
        if not watched:
            return
        busy.append(1)
        try:
            where = from_cell()
            if where is not None:
                report(event, repr(args[1:2] if event.startswith("object.") else args)[:200], where)
        finally:
            busy.pop()

    sys.addaudithook(hook)


def launch() -> None:
    """ipykernel's ``launch_new_instance``, with what survives a cell frozen out of the cyclic collector: a full
    collection otherwise walks every object torch and matplotlib created at import (about 0.1 s each, measured
    on the segmentation notebook), while what a cell leaves alive is nearly always still alive at the end."""
    import gc

    from ipykernel import kernelapp
    app = kernelapp.IPKernelApp.instance()
    app.initialize()
    app.shell.events.register("post_run_cell", lambda result: gc.freeze())
    gc.freeze()
    app.start()


if __name__ == "__main__":
    install(int(os.environ.pop("LECTURELIB_AUDIT_FD")))
    del install
    launch()
