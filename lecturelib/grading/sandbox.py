"""Run a Jupyter kernel inside a sandbox: bubblewrap on Linux, a limited process elsewhere.

Inside the bubblewrap sandbox the kernel sees only the system folders (/usr, /etc, ...), the Python
installation, the virtual environment and the package, all read-only; a private /tmp; no network; its
own PID namespace (every process it starts dies with it). None of the grader's parts are there: no
reference solutions, hidden cases or grading code (replaced by empty folders), no source notebooks, no
course folders, no home folders or other checkouts.

The work folder of one submission (:class:`Work`) is the grader's: the sandbox gets the submission, a home
and a temp folder (``box/``, read-write) and the kernel's socket folder (``ipc/``, read-write, a mount point it
cannot replace), and reads the connection file from ``conn/`` (read-only). Everything the grader writes or
deletes is outside what the sandbox can write, and the work folder is removed only once the kernel's PID
namespace is gone. Memory, CPU time and open files are limited with setrlimit; wall time by the caller.
"""
from __future__ import annotations

import compileall
import dataclasses
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client import AsyncKernelManager

from .paths import GRADER_ONLY, PACKAGE
AUDIT_SOURCE = (Path(__file__).parent / "audit.py").read_text()
# The venv's python at the venv's real path: a venv reached through a symlink is bound where it really is,
# and its python must be started from there (resolving the python itself would leave the venv).
PYTHON = str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name) \
    if (Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name).exists() else sys.executable


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one submission (the traits of ``IsolatedExecute`` set them)."""

    memory_mb: int = 6144
    cpu_seconds: int = 1800
    cell_timeout: int = 120
    collect_timeout: int = 60
    submission_seconds: int = 1800   # all cells, restarts and graded calls of one notebook together
    max_restarts: int = 6
    open_files: int = 1024
    # Figures are neither drawn, shown nor rasterised while grading (no verdict reads them; ~0.1 s per figure).
    figures: bool = False


@functools.lru_cache(maxsize=None)
def bubblewrap() -> str | None:
    """Path of a working ``bwrap`` (tried once), or None."""
    if sys.platform != "linux" or os.environ.get("LECTURELIB_NO_SANDBOX"):
        return None
    path = shutil.which("bwrap")
    if not path:
        return None
    probe = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                            "--unshare-all", "--die-with-parent", "true"], capture_output=True)
    return path if probe.returncode == 0 else None


def isolation_level() -> str:
    return "bubblewrap" if bubblewrap() else "process (no bubblewrap: file system and network are NOT isolated)"


SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _runtime_dirs() -> list[Path]:
    """What the kernel needs besides the system: the Python installation, the venv (its real path: a venv
    reached through a symlink is bound where it really is), the package."""
    dirs = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), PACKAGE}
    dirs = {d for d in dirs if not any(str(d).startswith(s + "/") for s in SYSTEM_DIRS if Path(s).is_dir())}
    return sorted({d for d in dirs if not any(p in dirs for p in d.parents)}, key=lambda d: len(d.parts))


def _inside(path: Path, dirs) -> bool:
    return any(path == d or d in path.parents for d in dirs)


FONT_CACHE_SOURCE = """import os, sys
import matplotlib, matplotlib.font_manager
print(os.path.join(matplotlib.get_cachedir(), f"fontlist-v{matplotlib.font_manager.FontManager.__version__}.json"))
"""


@functools.lru_cache(maxsize=None)
def font_cache() -> Path | None:
    """matplotlib's font list as a kernel builds it (the kernel's python, an empty home), or None without matplotlib.

    Built once per machine and venv into ``$XDG_CACHE_HOME/lecturelib`` (the grader's, never bound in the sandbox);
    every kernel gets a copy in its fresh ``MPLCONFIGDIR``, where it would otherwise scan the fonts again
    (measured: 0.15 s of every kernel that imports matplotlib)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lecturelib" / \
        f"mpl-{hashlib.sha256(PYTHON.encode()).hexdigest()[:16]}"
    found = sorted(cache.glob("fontlist-v*.json")) if cache.is_dir() else []
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(prefix="lecturelib-fonts-") as scratch:
        env = {**os.environ, "HOME": scratch, "MPLCONFIGDIR": str(Path(scratch) / "mpl")}
        proc = subprocess.run([PYTHON, "-c", FONT_CACHE_SOURCE], env=env, capture_output=True, text=True)
        built = Path(proc.stdout.strip()) if proc.returncode == 0 else None
        if built is None or not built.is_file():
            return None
        cache.mkdir(parents=True, exist_ok=True)
        staged = cache / f".{built.name}.{os.getpid()}"
        shutil.copyfile(built, staged)
        os.replace(staged, cache / built.name)       # concurrent graders: each replaces it whole
    return cache / built.name


@functools.lru_cache(maxsize=None)
def compile_package() -> None:
    """Byte-compile the package (once per grader process; nothing to do when it is up to date). Kernels import it
    read-only and cannot cache what they compile: a module no grader process imported (``lecturelib.data``,
    ``lecturelib.plot``, the topics) was compiled again by every kernel (measured: 0.07 s of the segmentation
    notebook's first cell)."""
    compileall.compile_dir(PACKAGE, quiet=2)   # a read-only install (already compiled by pip) is left as it is


class Work:
    """The grader's folder for one submission: ``box/`` (the sandbox's writable area: submission, home, tmp),
    ``ipc/`` (the kernel's sockets), ``conn/`` (the connection file) and ``visible/`` (the visible cases the
    notebook's own checks use, as the student package ships them), both read-only inside."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="lecturelib-grade-")).resolve()
        for sub in ("box/submission", "box/home/mpl", "box/tmp", "ipc", "conn", "visible"):
            (self.root / sub).mkdir(parents=True)
        compile_package()
        fonts = font_cache()
        if fonts is not None:
            shutil.copyfile(fonts, self.root / "box" / "home" / "mpl" / fonts.name)

    @property
    def submission(self) -> Path:
        return self.root / "box" / "submission"

    def fresh_ipc(self) -> Path:
        """An empty socket folder for a new kernel (whatever the last kernel left there is not touched)."""
        path = self.root / "ipc"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def remove(self) -> None:
        """Delete the folder; call only when no kernel of this submission is alive (rmtree does not follow links)."""
        shutil.rmtree(self.root, ignore_errors=True)


def copy_submission(source: Path, dest: Path) -> list[str]:
    """Copy a submission folder without following links; returns what was refused (links, FIFOs, devices...)."""
    refused = []
    for entry in os.scandir(source):
        mode = entry.stat(follow_symlinks=False).st_mode
        target = dest / entry.name
        if stat.S_ISLNK(mode):
            refused.append(f"{entry.name} (a symbolic link)")
        elif stat.S_ISDIR(mode):
            target.mkdir()
            refused += [f"{entry.name}/{r}" for r in copy_submission(Path(entry.path), target)]
        elif stat.S_ISREG(mode):
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            refused.append(f"{entry.name} (not a regular file: FIFO, socket or device)")
    return refused


def bwrap_args(work: Work, course_roots: list[Path]) -> list[str]:
    """bubblewrap arguments: the system, the Python installation, the venv and the package read-only, without
    the grader's parts; ``box/`` and ``ipc/`` read-write, ``conn/`` read-only."""
    args = [bubblewrap(), "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    runtime = _runtime_dirs()
    for path in runtime:
        args += ["--ro-bind", str(path), str(path)]
    visible = [Path(s) for s in SYSTEM_DIRS] + runtime
    grader_only = [PACKAGE / name for name in GRADER_ONLY]
    grader_only += [pyc for name in GRADER_ONLY if name.endswith(".py")                   # and course.py's bytecode
                    for pyc in (PACKAGE / "__pycache__").glob(f"{name[:-3]}.*.pyc")]
    for path in [*grader_only, *map(Path, course_roots)]:  # a file (course.py): /dev/null
        if path.exists() and _inside(path.resolve(), visible):
            args += ["--tmpfs", str(path.resolve())] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    root = work.root
    args += ["--bind", str(root / "box"), str(root / "box"), "--bind", str(root / "ipc"), str(root / "ipc"),
             "--ro-bind", str(root / "conn"), str(root / "conn"), "--ro-bind", str(root / "visible"),
             str(root / "visible"), "--chdir", str(work.submission),
             "--unshare-all", "--die-with-parent", "--unsetenv", "JPY_PARENT_PID"]
    return args


LIMITS_SOURCE = """import os, resource, sys
memory, cpu, files = (int(x) for x in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv(sys.argv[4], sys.argv[4:])
"""


def limit_args(limits: Limits) -> list[str]:
    """Run the rest of the command under setrlimit (address space, CPU seconds, open files)."""
    return [PYTHON, "-c", LIMITS_SOURCE, str(limits.memory_mb * 1024 * 1024), str(limits.cpu_seconds),
            str(limits.open_files)]


class SandboxKernelManager(AsyncKernelManager):
    """A KernelManager whose kernel runs inside the sandbox, talks over Unix sockets in ``ipc/``, and reports
    audit events on the write end ``audit_fd`` of a pipe (see ``audit.py``)."""

    def __init__(self, work: Work, limits: Limits, course_roots: list[Path], audit_fd: int, **kwargs):
        self.work = work
        self.limits = limits
        self.course_roots = [Path(p) for p in course_roots]
        self.audit_fd = audit_fd
        ipc = work.fresh_ipc()
        super().__init__(transport="ipc", ip=str(ipc / "kernel"),
                         connection_file=str(work.root / "conn" / "connection.json"), **kwargs)

    @property
    def kernel_spec(self):
        """Interrupts go as messages: a SIGINT to the process group would stop bubblewrap itself."""
        if self._kernel_spec is None:
            from jupyter_client.kernelspec import KernelSpec
            self._kernel_spec = KernelSpec(argv=[], display_name="sandbox", language="python",
                                           interrupt_mode="message")
        return self._kernel_spec

    def format_kernel_cmd(self, extra_arguments=None):
        # No input history: nothing reads it, and its SQLite writes cost about 1 ms of every cell.
        kernel = [PYTHON, "-Xfrozen_modules=off", "-c", AUDIT_SOURCE, "-f", self.connection_file,
                  "--HistoryManager.enabled=False"]
        if not self.limits.figures:
            # Nothing reads a figure while grading: pyplot not interactive (it would draw every figure after each
            # pyplot call: 0.07 s for one imshow with a colorbar), no figure shown or rasterised.
            kernel += ["--InlineBackend.figure_formats=set()", "--InlineBackend.rc={'interactive': False}"]
        cmd = limit_args(self.limits) + kernel
        if bubblewrap():
            cmd = bwrap_args(self.work, self.course_roots) + cmd
        return cmd

    async def _async_pre_start_kernel(self, **kw):
        env = dict(kw.pop("env", None) or os.environ)
        env.update(kernel_environment(self.work))
        env["LECTURELIB_AUDIT_FD"] = str(self.audit_fd)
        env["LECTURELIB_GRADING_FIGURES"] = "1" if self.limits.figures else "0"   # plot.display_only reads it
        kw["env"] = env
        kw["pass_fds"] = (self.audit_fd,)
        kw.setdefault("cwd", str(self.work.submission))
        kw.setdefault("stdout", subprocess.DEVNULL)  # the kernel's banner; its messages go over the sockets
        return await super()._async_pre_start_kernel(**kw)


def kernel_environment(work: Work) -> dict:
    """Environment of the kernel: everything writable points into ``box/``."""
    box = work.root / "box"
    return {
        "HOME": str(box / "home"),
        "IPYTHONDIR": str(box / "home" / "ipython"),
        "JUPYTER_CONFIG_DIR": str(box / "home" / "jupyter"),
        "JUPYTER_DATA_DIR": str(box / "home" / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(box / "home" / "jupyter-runtime"),
        "MPLCONFIGDIR": str(box / "home" / "mpl"),
        "TMPDIR": str(box / "tmp"),
        "LECTURELIB_VISIBLE_DATA": str(work.root / "visible"),
        "NBGRADER_EXECUTION": "autograde",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": os.environ.get("LECTURELIB_KERNEL_THREADS", "1"),
    }
