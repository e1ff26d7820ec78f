"""Warm shutdown reaches the renders.

The worker's main process raises a flag on SIGTERM; the processes it forked (Celery pool
children, RQ work horses) read it at every checkpoint, stop there and put the job back in
its queue for another worker, instead of holding the shutdown for up to an hour.
"""

from __future__ import annotations

import ctypes
import multiprocessing

# One byte of shared memory, made when the worker's main process imports this module,
# before it forks: every child reads the same byte. One writer, one byte: no lock (a lock
# taken in a signal handler could be held by a child killed mid-read).
_flag = multiprocessing.RawValue(ctypes.c_bool, False)


def request_stop() -> None:
    _flag.value = True


def stopping() -> bool:
    return bool(_flag.value)
