"""Ctrl-C and SIGTERM stop a build within seconds, even while a case is blocked in a read."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_factory import write_series
from verse_etl.io.dicom import SeriesReader, scan_folder
from verse_etl.stopping import BuildStopped, check_stop, request_stop, stop_on_signals

# A process shaped like a build: the main thread waits for a pool of case threads; one case is
# blocked for ever inside a system call (a read from a pipe nobody writes to: what a hung
# network mount looks like), another works step by step, checking for a stop between steps.
PROGRAM = textwrap.dedent(
    """
    import atexit, os, signal, sys, time
    from concurrent.futures import ThreadPoolExecutor, wait
    from verse_etl.stopping import check_stop, stop_on_signals

    atexit.register(lambda: print("cleanup ran", flush=True))
    signal.signal(signal.SIGTERM, lambda s, f: print("earlier handler ran", flush=True))
    r, w = os.pipe()

    def blocked():
        os.read(r, 1)

    def working():
        while True:
            check_stop()
            time.sleep(0.01)

    with stop_on_signals(grace_s=float(sys.argv[1])):
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(blocked), pool.submit(working)]
            print("started", flush=True)
            wait(futures)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_process_though_a_case_is_blocked(tmp_path: Path, sig: int) -> None:
    script = tmp_path / "build.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [sys.executable, str(script), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 20 s after {signal.Signals(sig).name}")
    assert time.monotonic() - sent < 10
    assert proc.returncode == 128 + sig, err
    assert "cleanup ran" in out  # atexit handlers (other components' cleanup) still run
    assert "a case is blocked" in err
    # A handler installed before (another component's) is called, not replaced.
    assert ("earlier handler ran" in out) is (sig == signal.SIGTERM)


def test_a_running_conversion_stops_at_its_next_slice(tmp_path: Path) -> None:
    write_series(tmp_path, np.zeros((8, 8, 4), np.int16))
    (series,) = scan_folder(tmp_path).series.values()
    reader = SeriesReader(tuple(series))
    out = np.empty((8, 8, 2), np.int16, order="F")
    reader.read_into(out)
    with stop_on_signals():
        request_stop()
        with pytest.raises(BuildStopped):
            reader.read_into(out)
    check_stop()  # leaving the block clears the request: the next build runs
