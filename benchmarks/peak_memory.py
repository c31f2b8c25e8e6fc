"""Peak memory of a process by itself, and of a process tree, for the benchmarks (Linux).

Why not ``getrusage``: Linux carries the resident size of a forking parent into its child's
``ru_maxrss`` across ``exec`` (the peak of the old address space is kept), so a child started by
a 266 MB benchmark reports at least 266 MB whatever it does itself. Instead:

- a Python child reads its own ``VmHWM`` (peak resident set of its address space, which ``exec``
  starts afresh) from ``/proc/self/status`` when it is done: :func:`own_peak_mb`;
- another program is started by a small launcher (``python -S``, a few MB, which forks it and
  reads ``ru_maxrss`` of it from ``wait4``): its figure is the program's peak, or the launcher's
  size if that is larger, which is printed as the floor: :func:`run_with_peak`;
- a whole process tree (a build with its Prefect server and Dask workers) is sampled: the sum of
  the proportional set sizes (``Pss``: shared pages split between the processes that map them)
  of the root and every descendant, every ``interval`` seconds: :class:`TreeSampler`. Peaks
  shorter than the interval can be missed; the sum of each process's own ``VmHWM`` (last seen)
  is printed beside it as an upper bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HOW = (
    "peak RSS: each variant's own VmHWM (/proc/self/status, read by the child at its end; "
    "a program that is not Python: ru_maxrss from a small launcher's wait4, floor = launcher)"
)

_LAUNCHER = r"""
import json, os, sys
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
floor = hwm()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "peak_kib": usage.ru_maxrss,
                  "floor_kib": floor}), file=sys.stderr)
"""


def own_peak_mb() -> float:
    """This process's peak resident set size in MiB (``VmHWM``), since its ``exec``."""
    return _status_kib(Path("/proc/self/status"), "VmHWM") / 1024


def run_with_peak(command: list[str], **kwargs: object) -> tuple[int, float, float]:
    """Run ``command``; return its exit code, its peak RSS and the launcher's floor (MiB).

    The program's own output goes where ``kwargs`` say (as for :func:`subprocess.run`); the
    launcher reports on its standard error, which is captured here.
    """
    proc = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *command],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["peak_kib"] / 1024, report["floor_kib"] / 1024


class TreeSampler:
    """Sample the memory of process ``root`` and all its descendants in a background thread.

    Use as a context manager around the work; read :attr:`peak_pss_mb` (largest sum of Pss seen
    at one sample), :attr:`peak_hwm_sum_mb` (sum over every process seen of its last ``VmHWM``:
    an upper bound) and :attr:`processes` (how many distinct processes were seen).
    """

    def __init__(self, root: int | None = None, interval: float = 0.2) -> None:
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.peak_pss_mb = 0.0
        self._hwm: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    @property
    def peak_hwm_sum_mb(self) -> float:
        return sum(self._hwm.values()) / 1024

    @property
    def processes(self) -> int:
        return len(self._hwm)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        total = 0
        for pid in _tree(self.root):
            try:
                start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
                total += _status_kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss")
                self._hwm[(pid, start)] = _status_kib(Path(f"/proc/{pid}/status"), "VmHWM")
            except (OSError, StopIteration, IndexError):
                continue  # the process ended between listing and reading
        self.peak_pss_mb = max(self.peak_pss_mb, total / 1024)


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _status_kib(path: Path, field: str) -> int:
    with open(path) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


if __name__ == "__main__":  # smoke check: python benchmarks/peak_memory.py
    print(f"this process: {own_peak_mb():.0f} MiB")
    code, peak, floor = run_with_peak(["true"])
    print(f"`true` via the launcher: {peak:.1f} MiB (floor {floor:.1f} MiB), exit {code}")
    with TreeSampler() as tree:
        time.sleep(0.5)
    print(f"tree: Pss {tree.peak_pss_mb:.0f} MiB, {tree.processes} process(es)")
