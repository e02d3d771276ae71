"""Imported once, by the fork server that forks every child of a run (and nothing else).

Importing it makes the fork server a zygote: it leaves the orchestrator's session, so the
terminal's Ctrl-C and SIGHUP and a SIGTERM to the orchestrator's process group reach only
the orchestrator (which stops the run in order); it ignores those signals itself; and it
imports the NIC and CPU code and loads every compiled kernel once, so that each child forked
from it starts with all of that in place instead of spending a second or two importing and
loading on its own, five at once on two cores. The kernels must already be in the cache
(emu.kcache.ensure_compiled runs first): loading here never compiles.
"""

import os
import signal

try:
    os.setsid()
except OSError:        # already a session leader: nothing to leave
    pass
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, signal.SIG_IGN)

import cpus.process  # noqa: E402,F401
import nic.process  # noqa: E402,F401
from emu import jit  # noqa: E402

jit.warm_all()
