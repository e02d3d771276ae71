"""The run's shared memory: one segment, laid out from the resolved config.

The orchestrator creates and unlinks the segment (it is the only owner, so no child's
resource tracker can unlink it early); children map the same file read-write without
registering it anywhere. Every offset comes from Layout, computed identically in every
process from the same config.
"""

from __future__ import annotations

import mmap
import os
from multiprocessing import shared_memory

import numpy as np

from .config import Config
from .counters import CPU_SLOTS, NIC_SLOTS, cpu_block, nic_block
from .errors import ConfigError
from .ring import Ring, ring_bytes
from .shmlock import LOCK_BYTES, init_lock
from .skb import (FLOW, RPS_NO_CPU, SKB, SOCK_ENTRY, backlog_capacity, rx_staging_capacity,
                  socket_ring_capacity)
from .syncblock import SyncBlock, layout_words

SHM_DIR = "/dev/shm"


def _align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a


class Layout:
    """Offsets of every block in the run's segment, and which config keys sized them."""

    def __init__(self, cfg: Config):
        self.parts: list[tuple[int, str]] = []     # (bytes, the keys that drive them)
        off = 0
        self.nic = off
        off = _align(off + NIC_SLOTS * 8)
        self.cpu = []
        for _ in range(cfg.ncpus):
            self.cpu.append(off)
            off = _align(off + CPU_SLOTS * 8)
        self.sync = off
        off = _align(off + 8 * layout_words(cfg.ncpus, cfg.nqueues))
        self.futex = off
        off = _align(off + SyncBlock.futex_bytes(cfg.ncpus))
        self.ring_size = rx_staging_capacity(cfg["ethtool.rx_ring"])
        self.rx = []
        start = off
        for _ in range(cfg.nqueues):
            self.rx.append(off)
            off = _align(off + ring_bytes(SKB, self.ring_size))
        self.parts.append((off - start, f"ethtool.rx_ring={cfg['ethtool.rx_ring']} "
                                        f"({self.ring_size} slots) x "
                                        f"ethtool.rx_queues={cfg.nqueues}"))
        mx = cfg["net.core.netdev_max_backlog"]
        self.backlog_cap = backlog_capacity(mx)
        self.backlog = []
        start = off
        for _ in range(cfg.ncpus):
            self.backlog.append(off)
            off = _align(off + ring_bytes(SKB, self.backlog_cap))
        self.parts.append((off - start, f"net.core.netdev_max_backlog={mx} "
                                        f"({self.backlog_cap} slots) x run.cpus={cfg.ncpus}"))
        self.sock = []
        self.sock_cap = []
        for i, s in enumerate(cfg["udp.sockets"]):
            cap = socket_ring_capacity(s["rcvbuf"])
            self.sock.append(off)
            self.sock_cap.append(cap)
            size = _align(ring_bytes(SOCK_ENTRY, cap))
            self.parts.append((size, f"udp.sockets.{i}.rcvbuf={s['rcvbuf']}"))
            off += size
        self.sock_flow_entries = cfg["net.core.rps_sock_flow_entries"]
        self.sock_flow = off
        off = _align(off + 4 * self.sock_flow_entries)
        self.parts.append((4 * self.sock_flow_entries,
                           f"net.core.rps_sock_flow_entries={self.sock_flow_entries}"))
        self.flow_tables = []
        for q in range(cfg.nqueues):
            cnt = cfg.queue(q)["rps_flow_cnt"]
            self.flow_tables.append((off, cnt))
            off = _align(off + 8 * cnt)
            self.parts.append((8 * cnt, f"sys.class.net.eth0.queues.rx-{q}.rps_flow_cnt={cnt}"))
        self.backlog_locks = []
        for _ in range(cfg.ncpus):
            self.backlog_locks.append(off)
            off += LOCK_BYTES
        self.sock_locks = []
        for _ in cfg["udp.sockets"]:
            self.sock_locks.append(off)
            off += LOCK_BYTES
        self.size = max(off, 4096)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_fits(layout: Layout, shm_dir: str = SHM_DIR) -> None:
    """Refuse, before anything is created, a config whose segment /dev/shm cannot hold."""
    try:
        st = os.statvfs(shm_dir)
        free = st.f_bavail * st.f_frsize
    except OSError as e:
        raise ConfigError(f"{shm_dir}: {e.strerror}; the run needs it for its shared memory") from None
    if layout.size <= free:
        return
    big = sorted((p for p in layout.parts if p[0] * 100 >= layout.size), reverse=True)[:3]
    drivers = "; ".join(f"{k} needs {_size(b)}" for b, k in big)
    raise ConfigError(f"the run needs {_size(layout.size)} of shared memory but {shm_dir} has "
                      f"{_size(free)} free ({drivers}): lower those settings")


class Segment:
    """The mapped segment, as the orchestrator (owner) or a child (attached) sees it."""

    def __init__(self, name: str, buf, owner: shared_memory.SharedMemory | None, mm=None):
        self.name = name
        self.buf = buf
        self._owner = owner
        self._mm = mm

    @classmethod
    def create(cls, name: str, size: int) -> "Segment":
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        return cls(name, shm.buf, shm)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        return cls(name, memoryview(mm), None, mm)

    def close(self) -> None:
        """Drop this process's mapping (numpy views must be gone first)."""
        self.buf = None
        if self._owner is not None:
            try:
                self._owner.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with the process
        elif self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass

    def unlink(self) -> None:
        if self._owner is not None:
            try:
                self._owner.unlink()
            except FileNotFoundError:
                pass


def unlink_by_name(name: str) -> bool:
    """Remove a segment named in a manifest (emu clean); True if one was there."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a segment name: {name!r}")
    path = os.path.join(SHM_DIR, name)
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


class Views:
    """Plain numpy and Ring views of every block, for one process.

    The kernel's objects over them (backlogs, sockets with their locks) are cpus.host's
    business: this layer knows layouts, not behaviour.
    """

    def __init__(self, cfg: Config, layout: Layout, buf):
        self.buf = buf
        self.layout = layout
        self.nic = nic_block(buf, layout.nic)
        self.sync = SyncBlock(buf, layout.sync, layout.futex, cfg.ncpus, cfg.nqueues,
                              cfg.effective_cpu)
        self.cpu = [cpu_block(buf, o) for o in layout.cpu]
        self.rx = [Ring(buf, SKB, layout.ring_size, o) for o in layout.rx]
        self.backlogs = [Ring(buf, SKB, layout.backlog_cap, o) for o in layout.backlog]
        self.sockets = [Ring(buf, SOCK_ENTRY, cap, o) for o, cap in zip(layout.sock, layout.sock_cap)]
        self.sock_flow = (np.ndarray((layout.sock_flow_entries,), dtype="<u4", buffer=buf,
                                     offset=layout.sock_flow)
                          if layout.sock_flow_entries else None)
        self.flow_tables = [np.ndarray((cnt,), dtype=FLOW, buffer=buf, offset=o) if cnt else None
                            for o, cnt in layout.flow_tables]

    def init_tables(self, stop_at: int | None = None) -> None:
        """Owner only, before children start: the locks, the kernel's initial tables, the
        sync block (the run ends at stop_at emulated ns at the latest)."""
        from .syncblock import INF
        self.sync.init(INF if stop_at is None else stop_at)
        for off in self.layout.backlog_locks + self.layout.sock_locks:
            init_lock(self.buf, off)
        if self.sock_flow is not None:
            self.sock_flow[:] = RPS_NO_CPU
        for t in self.flow_tables:
            if t is not None:
                t["cpu"] = RPS_NO_CPU
                t["last_qtail"] = 0


def private(cfg: Config) -> Views:
    """The same layout in this process's private memory (unit tests, one-process runs)."""
    layout = Layout(cfg)
    v = Views(cfg, layout, bytearray(layout.size))
    v.init_tables()
    return v
