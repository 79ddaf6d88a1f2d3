"""Run a Jupyter kernel inside a sandbox: bubblewrap on Linux, a limited process elsewhere.

Inside the bubblewrap sandbox the kernel sees only the system folders (/usr, /etc, ...), the Python
installation, the virtual environment and the package, all read-only; a private /tmp; no network; its
own PID namespace (every process it starts dies with it). None of the grader's secrets are there: no
reference solutions or hidden cases (replaced by empty folders), no source notebooks, no course
folders, no home folders or other checkouts. Only the submission's work folder is writable.
Memory (address space) and CPU time are limited with setrlimit; wall time is enforced by the caller.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from jupyter_client import AsyncKernelManager

PACKAGE = Path(__file__).resolve().parent.parent       # .../lecturelib
REPO = PACKAGE.parent


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's kernel."""

    memory_mb: int = int(os.environ.get("LECTURELIB_MEMORY_MB", "6144"))
    cpu_seconds: int = int(os.environ.get("LECTURELIB_CPU_SECONDS", "1800"))
    cell_timeout: int = int(os.environ.get("LECTURELIB_CELL_TIMEOUT", "120"))
    collect_timeout: int = int(os.environ.get("LECTURELIB_COLLECT_TIMEOUT", "60"))
    max_restarts: int = 6
    # Figures are drawn but not rasterised while grading (no verdict reads them; ~0.1 s per figure):
    # LECTURELIB_GRADING_FIGURES=1 keeps them as PNGs in the autograded notebooks and the feedback.
    figures: bool = os.environ.get("LECTURELIB_GRADING_FIGURES", "") not in ("", "0")


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
    """What the kernel needs besides the system: the Python installation, the venv, the package."""
    dirs = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), PACKAGE}
    dirs = {d for d in dirs if not any(str(d).startswith(s + "/") for s in SYSTEM_DIRS if Path(s).is_dir())}
    return sorted(dirs, key=lambda d: len(d.parts))


def _inside(path: Path, dirs) -> bool:
    return any(path == d or d in path.parents for d in dirs)


def bwrap_args(work: Path, course_roots: list[Path]) -> list[str]:
    """bubblewrap arguments. Only the system folders, the Python installation, the venv and the package
    are visible (read-only): no home folders, no other checkouts, no course folders. The package's
    reference solutions and hidden cases are replaced by empty folders; only ``work`` is writable."""
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
    for path in [PACKAGE / "reference", PACKAGE / "hidden", *map(Path, course_roots)]:
        if path.exists() and _inside(path.resolve(), visible):
            args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    args += ["--bind", str(work), str(work), "--chdir", str(work / "submission"),
             "--unshare-all", "--die-with-parent", "--unsetenv", "JPY_PARENT_PID"]
    return args


def limit_args(limits: Limits) -> list[str]:
    """Run the kernel under setrlimit (address space, CPU seconds)."""
    return [sys.executable, "-m", "lecturelib.grading.limits", str(limits.memory_mb), str(limits.cpu_seconds), "--"]


class SandboxKernelManager(AsyncKernelManager):
    """A KernelManager whose kernel runs inside the sandbox and talks over Unix sockets in ``work``."""

    def __init__(self, work: Path, limits: Limits, course_roots: list[Path], **kwargs):
        self.work = Path(work)
        self.limits = limits
        self.course_roots = [Path(p) for p in course_roots]
        (self.work / "ipc").mkdir(parents=True, exist_ok=True)
        super().__init__(transport="ipc", ip=str(self.work / "ipc" / "kernel"),
                         connection_file=str(self.work / "ipc" / "connection.json"), **kwargs)

    @property
    def kernel_spec(self):
        """Interrupts go as messages: a SIGINT to the process group would stop bubblewrap itself."""
        if self._kernel_spec is None:
            from jupyter_client.kernelspec import KernelSpec
            self._kernel_spec = KernelSpec(argv=[], display_name="sandbox", language="python",
                                           interrupt_mode="message")
        return self._kernel_spec

    def format_kernel_cmd(self, extra_arguments=None):
        kernel = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", self.connection_file]
        if not self.limits.figures:
            kernel.append("--InlineBackend.figure_formats=set()")
        cmd = limit_args(self.limits) + kernel
        if bubblewrap():
            cmd = bwrap_args(self.work, self.course_roots) + cmd
        return cmd

    async def _async_pre_start_kernel(self, **kw):
        env = dict(kw.pop("env", None) or os.environ)
        env.update(kernel_environment(self.work))
        kw["env"] = env
        kw.setdefault("cwd", str(self.work / "submission"))
        kw.setdefault("stdout", subprocess.DEVNULL)  # the kernel's banner; its messages go over the sockets
        return await super()._async_pre_start_kernel(**kw)


def kernel_environment(work: Path) -> dict:
    """Environment of the kernel: everything writable points into ``work``."""
    return {
        "HOME": str(work / "home"),
        "IPYTHONDIR": str(work / "home" / "ipython"),
        "JUPYTER_CONFIG_DIR": str(work / "home" / "jupyter"),
        "JUPYTER_DATA_DIR": str(work / "home" / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(work / "home" / "jupyter-runtime"),
        "MPLCONFIGDIR": str(work / "home" / "mpl"),
        "TMPDIR": str(work / "tmp"),
        "NBGRADER_EXECUTION": "autograde",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": os.environ.get("LECTURELIB_KERNEL_THREADS", "1"),
    }


def prepare_work(work: Path) -> None:
    for sub in ("submission", "home", "tmp", "calls", "outcomes", "ipc"):
        (work / sub).mkdir(parents=True, exist_ok=True)
