"""What the C library prints (the trainer's progress bar on stderr, its
summary on stdout) reaches sys.stdout / sys.stderr when those are not the
process's own file descriptors 1 and 2: in Jupyter (ipykernel replaces them
with its own streams) C output would otherwise go to the kernel's log, not
the notebook."""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any, List, Tuple


def _is_fd(stream: Any, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


class relay_c_output:
    """Context manager: while active, file descriptors 1 and 2 are pipes
    whose contents a thread writes to sys.stdout / sys.stderr (only for a
    stream that is not already that descriptor). With `force_progress`, the
    C progress bar is drawn even though fd 2 is then not a terminal
    (SAEFLOW_PROGRESS=1, unless the caller set it)."""

    def __init__(self, force_progress: bool = True):
        self.force = force_progress
        self.active: List[Tuple[int, int, threading.Thread]] = []
        self.env_set = False

    def __enter__(self) -> "relay_c_output":
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            if stream is None or _is_fd(stream, fd):
                continue
            _flush_c()
            r, w = os.pipe()
            saved = os.dup(fd)
            os.dup2(w, fd)
            os.close(w)
            th = threading.Thread(target=_pump, args=(r, stream), daemon=True)
            th.start()
            self.active.append((fd, saved, th))
            if fd == 2 and self.force and "SAEFLOW_PROGRESS" not in os.environ:
                os.environ["SAEFLOW_PROGRESS"] = "1"
                self.env_set = True
        return self

    def __exit__(self, *exc: Any) -> None:
        _flush_c()
        for fd, saved, th in self.active:
            os.dup2(saved, fd)  # closes the pipe's write end: the pump sees EOF
            os.close(saved)
            th.join()
        self.active = []
        if self.env_set:
            del os.environ["SAEFLOW_PROGRESS"]
            self.env_set = False


def _pump(r: int, stream: Any) -> None:
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            b = f.read(4096)
            if not b:
                break
            try:
                stream.write(b.decode("utf-8", "replace"))
                stream.flush()
            except Exception:  # a closed or odd stream: drop the text, keep draining
                pass


def _flush_c() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
