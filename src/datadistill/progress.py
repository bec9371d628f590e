"""Progress of steps that have no natural bar (reading and decoding a dataset): a line on stderr
once the step has taken `delay` seconds, and one when it ends, so short steps stay silent and a
long one never is. Bars (training, test inference) are tqdm's, on stderr too. Everything here is
off with `enabled=False` (the CLI's --no-progress)."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator

DELAY_S = 2.0


def _write(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


@contextlib.contextmanager
def stage(desc: str, enabled: bool = True, delay: float = DELAY_S) -> Iterator[None]:
    """`with stage("reading cifar10"):` prints "reading cifar10 ..." after `delay` seconds if the
    step is still running, and "reading cifar10: done in 12.3 s" at its end when the first line
    was printed."""
    if not enabled:
        yield
        return
    t0 = time.perf_counter()
    shown = threading.Event()

    def announce() -> None:
        shown.set()
        _write(f"{desc} ...")

    timer = threading.Timer(delay, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if shown.is_set():
            _write(f"{desc}: done in {time.perf_counter() - t0:.1f} s")
