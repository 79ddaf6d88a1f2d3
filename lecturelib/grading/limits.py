"""``python -m lecturelib.grading.limits MEMORY_MB CPU_SECONDS -- CMD ...``: exec CMD under setrlimit."""
import os
import resource
import sys


def main(argv: list[str]) -> None:
    memory_mb, cpu_seconds, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: python -m lecturelib.grading.limits MEMORY_MB CPU_SECONDS -- CMD ...")
    memory = int(memory_mb) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds) + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
