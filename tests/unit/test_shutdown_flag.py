"""The warm-shutdown flag crosses a fork: raised in the parent, read in the child."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, time
    from app.workers import shutdown

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a render waiting at its checkpoints
        os.close(read)
        os.write(write, b"r")
        deadline = time.monotonic() + 10
        while not shutdown.stopping() and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if shutdown.stopping() else 1)
    os.close(write)
    os.read(read, 1)  # the child runs
    assert not shutdown.stopping()
    shutdown.request_stop()  # what SIGTERM does in the worker's main process
    _, status = os.waitpid(pid, 0)
    print("child saw it" if os.waitstatus_to_exitcode(status) == 0 else "child missed it")
    """
)


def test_a_forked_child_sees_the_stop_its_parent_raised() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "child saw it", done.stderr
