"""Whole hosts through the process Port (emu.syncwait.ProcPort: futex words, the mailboxes,
ZeroMQ for the NIC's interrupts, the compiled waits), each agent on a thread of its own: they
run concurrently, as processes do (the kernels release the GIL, so one agent's Python runs
while another sleeps in its wait), and every counter must be the golden copy's, as the
baton's in-order run gives them (test_golden.py). This holds the compiled wait path
(Sync._until_port, syncwait._sync_until, _wait_horizon) against the step-by-step one, under
real concurrency."""

import json
import threading

import pytest
import zmq

from emu.syncblock import STOPPING, WAITS
from emu.syncwait import ProcPort

from .harness import AgentHost
from .test_golden import GOLDEN, SCENARIOS, _collect

pytestmark = [pytest.mark.compiled, pytest.mark.timeout(180)]


class ThreadHost(AgentHost):
    """AgentHost's agents with ProcPorts (inproc ZeroMQ for the NIC's interrupts), each run
    on its own thread."""

    def __init__(self, sets, sources, duration_ns, drain_ns):
        self.ctx = zmq.Context()
        self.failed = threading.Event()
        self.sockets = []
        tag = f"emu-test-{id(self)}"
        pushes = {}

        def port(a, sb):
            if a == sb.nic:
                for c in range(sb.ncpus):
                    push = self._socket(zmq.PUSH)
                    push.connect(f"inproc://{tag}-cpu{c}")
                    pushes[c] = push
                return ProcPort(sb, a, None, pushes, "test", self.failed.is_set)
            pull = self._socket(zmq.PULL)
            pull.bind(f"inproc://{tag}-cpu{a}")
            return ProcPort(sb, a, pull, {}, "test", self.failed.is_set)

        super().__init__(sets, ncpus=4, sources=sources, duration_ns=duration_ns,
                         drain_ns=drain_ns, port=port)

    def _socket(self, kind):
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self.sockets.append(s)
        return s

    def run(self, timeout_s: float = 150.0) -> None:
        errors = []

        def body(agent):
            try:
                agent.run()
            except BaseException as e:       # re-raised below, after every thread ended
                errors.append(e)
                self.failed.set()
                self.sb.glob[STOPPING] = 1

        threads = [threading.Thread(target=body, args=(ag,), daemon=True) for ag in self.agents]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout_s)
            alive = [t.name for t in threads if t.is_alive()]
            if alive:                        # stop the others: every wait sees STOPPING
                self.failed.set()
                self.sb.glob[STOPPING] = 1
                for a in range(self.sb.nagents):
                    self.agents[0].sync.port.wake(a)
                for t in threads:
                    t.join(10)
            assert not errors, errors
            assert not alive, f"agent threads still running after {timeout_s:.0f} s: {alive}"
        finally:
            for s in self.sockets:
                s.close(0)
            self.ctx.term()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_threads_through_the_process_port_give_the_golden_counters(name):
    sets, sources = SCENARIOS[name]
    h = ThreadHost(sets, sources, duration_ns=1_200_000, drain_ns=200_000)
    h.run()
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    got = _collect(h)
    for c, (g, w) in enumerate(zip(got["cpus"], want["cpus"])):
        diff = {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
        assert not diff, f"cpu{c}: (got, golden) {diff}"
    assert got == want
    assert sum(int(h.sb.agents[a, WAITS]) for a in range(4)) > 0    # they did wait for each other
