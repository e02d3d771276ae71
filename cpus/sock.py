"""UDP sockets: receive queues that several CPU processes fill and one reader drains.

A socket's receive queue is a Ring of SOCK_ENTRY (one entry per queued skb) in memory every
process maps. Producers (the CPUs running udp_rcv) push under the socket's lock, which is
injected (a multiprocessing lock in a run, threading.Lock or None in tests); the reader pops
without it (the ring is single-consumer) and takes the lock only to give back receive memory.

State every process must see lives in the ring's user header words:

    word 0  sk_rmem_alloc    bytes of truesize charged to the socket (exact, under the lock)
    word 1  sk_drops         skbs refused by the receive-buffer rule
    word 2  sk_rxhash        hash of the last skb given to a connected socket
    word 3  forward_deficit  (reader only) truesize dequeued but not yet given back
    word 4  reader_queue     (reader only) skbs the reader has spliced off and not yet read

Kernel rules followed (6.18, net/ipv4/udp.c, include/net/rps.h, include/linux/skbuff.h):

* __udp_enqueue_schedule_skb: with rmem = sk_rmem_alloc (+ the per-NUMA producer queue's
  rmem_alloc, folded in here: producers are serialised by the lock, so that queue is always
  spliced at once), an skb of truesize `size` is dropped when ``rmem + size > rcvbuf`` and the
  queue is not empty (``rmem != 0``); when rcvbuf > INT_MAX >> 1 the empty-queue exception
  does not apply. Accepted skbs add their truesize to rmem, so a first oversized skb may push
  rmem past rcvbuf. This is the 6.18 rule ("udp: refine __udp_enqueue_schedule_skb() test",
  net-next 2025-09); 6.10-6.17 let any skb in while rmem <= rcvbuf/2 and dropped beyond it
  when ``rmem + size > rcvbuf``; older kernels dropped only when rmem > rcvbuf.
  Every drop: sk_drops += 1; the caller counts Udp RcvbufErrors and InErrors (-ENOMEM).
  skb_condense() (rmem > rcvbuf/2) does not change our truesize: the modelled skbs are
  linear heads whose truesize already is SKB_TRUESIZE(end offset).
* __udp_queue_rcv_skb: a connected socket (inet_daddr set) saves skb->hash as sk_rxhash for
  every skb it is given, before the enqueue (so also for skbs then dropped).
* udp_recvmsg: InDatagrams += 1 per datagram read (not at enqueue).
* Receive memory is given back lazily (udp_rmem_release with partial=1, from
  udp_skb_destructor): dequeued truesize accumulates in forward_deficit and is subtracted from
  sk_rmem_alloc only when the deficit reaches forward_threshold (sk_rcvbuf >> 2) or the
  reader's private queue (reader_queue) becomes empty; at that moment everything in
  sk_receive_queue is spliced onto reader_queue. So under load rmem runs up to rcvbuf/4
  above what is really queued, and the drop boundary moves accordingly. defer_release=False
  gives the memory back at once instead (an idealised socket).
* inet_recvmsg -> sock_rps_record_flow: for a connected (TCP_ESTABLISHED) socket with a
  non-zero sk_rxhash, once per recvmsg call and before reading, write
  ``(hash & ~rps_cpu_mask) | cpu`` at ``ents[hash & mask]`` of rps_sock_flow_table, only if
  the entry differs (rps_record_sock_flow avoids dirtying the shared cache line).
"""

from __future__ import annotations

import numpy as np

from emu.counters import MAX_SOURCES, SRC_DELIVERED0, C
from emu.jit import kernel
from emu.ring import CONS, PROD, U_DEFICIT, U_DROPS, U_READER_Q, U_RMEM, U_RXHASH, USER0, Ring
from emu.ringcopy import ring_read, ring_visible
from emu.skb import INT_MAX, SOCK_ENTRY

from .rps import rps_cpu_mask

_RECVMSG_CALLS = int(C.RECVMSG_CALLS)
_UDP_IN_DATAGRAMS = int(C.UDP_IN_DATAGRAMS)
_USER_DATAGRAMS = int(C.USER_DATAGRAMS)
_SRC_DELIVERED0 = int(SRC_DELIVERED0)
_ENTRY_TS = SOCK_ENTRY.fields["ts"][1]
_ENTRY_VOID = np.dtype((np.void, SOCK_ENTRY.itemsize))


def release_plan(sizes: np.ndarray, deficit: int, reader_q: int, rest: int,
                 threshold: int) -> tuple[int, int, int]:
    """udp_rmem_release(partial) over consecutive dequeues: (released, deficit, reader_q).

    sizes: truesize of the skbs read, in order; deficit / reader_q: the reader's state before;
    rest: skbs still in the socket after them (they are spliced onto reader_queue at each
    release).
    """
    r, d, q = _release_plan(np.ascontiguousarray(sizes, dtype=np.int64), int(deficit),
                            int(reader_q), int(rest), int(threshold))
    return int(r), int(d), int(q)


@kernel
def _release_plan(sizes, deficit, reader_q, rest, threshold):
    m = sizes.shape[0]
    if m == 0:
        return 0, deficit, reader_q
    if reader_q == 0:                   # __skb_recv_udp: splice sk_receive_queue, then dequeue
        reader_q = m + rest
    released = 0
    for i in range(m):                  # one dequeue at a time
        deficit += sizes[i]
        reader_q -= 1
        if deficit >= threshold or reader_q == 0:
            released += deficit
            deficit = 0
            reader_q = (m - 1 - i) + rest   # skb_queue_splice_tail_init(sk_queue, reader_queue)
    return released, deficit, reader_q


class _NoLock:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


def _parse_connect(text: str) -> tuple[int, int]:
    ip, _, port = text.rpartition(":")
    a, b, c, d = (int(x) for x in ip.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d, int(port)


class UdpSocket:
    """One bound UDP socket (INADDR_ANY:port), optionally connected to a peer."""

    def __init__(self, ring: Ring, lock, port: int, rcvbuf: int, reader_cpu: int,
                 connected: bool | str = False, *, connect: str | None = None,
                 peer_addr: int | None = None, peer_port: int | None = None,
                 defer_release: bool = True):
        self.ring = ring
        self.lock = lock if lock is not None else _NoLock()
        self.port = int(port)
        self.rcvbuf = int(rcvbuf)                 # sk_rcvbuf (already doubled by SO_RCVBUF)
        self.forward_threshold = self.rcvbuf >> 2
        self.reader_cpu = int(reader_cpu)
        if isinstance(connected, str):
            connect, connected = connected, bool(connected)
        if connect:
            peer_addr, peer_port = _parse_connect(connect)
            connected = True
        self.connected = bool(connected)
        self.peer_addr = peer_addr                # None: any source (connected without a peer)
        self.peer_port = peer_port
        self.defer_release = defer_release
        self.index = -1                           # set by SocketTable
        self._buf = None                          # recvmsg's read buffer

    # -- shared state ------------------------------------------------------------------------
    def rmem(self) -> int:
        return self.ring.user(U_RMEM)

    def drops(self) -> int:
        return self.ring.user(U_DROPS)

    def rxhash(self) -> int:
        return self.ring.user(U_RXHASH)

    def queued(self) -> int:
        return len(self.ring)

    # -- producer side (softirq on any CPU) --------------------------------------------------
    def enqueue(self, entries: np.ndarray) -> tuple[np.ndarray, bool]:
        """__udp_queue_rcv_skb for a batch of socket entries, in order: (accepted mask, the
        queue went from empty to non-empty, i.e. the reader must be woken)."""
        n = entries.shape[0]
        accept = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return accept, False
        ring = self.ring
        hdr = ring.hdr
        ent = np.ascontiguousarray(entries).view(np.uint8).reshape(n, SOCK_ENTRY.itemsize)
        self.lock.acquire()
        try:
            n_acc, prod, was_empty = _enqueue(hdr, ring.raw, ent, self.rcvbuf,
                                              self.rcvbuf <= (INT_MAX >> 1), self.connected,
                                              accept)
            if n_acc < 0:
                raise RuntimeError(f"socket ring of port {self.port} is too small "
                                   f"({ring.capacity}) for rcvbuf {self.rcvbuf}")
            if n_acc:
                hdr[PROD] = prod + n_acc      # publish only after the slots are written
        finally:
            self.lock.release()
        return accept, bool(n_acc and was_empty)

    # -- reader side (the application's task on reader_cpu) ----------------------------------
    def recvmsg(self, max_n: int, cpu: int, counters: np.ndarray,
                sock_table: np.ndarray | None = None, ncpus: int = 1,
                now: int | None = None) -> tuple[np.ndarray, int]:
        """Read up to max_n datagrams: (entries, datagrams still queued).

        With ``now``, only the entries visible at that emulated time are read; if every
        queued entry is still in flight from another CPU, nothing is read (and no call is
        counted): see next_visible().
        """
        ring = self.ring
        hdr = ring.hdr
        buf = self._buf
        if buf is None or buf.shape[0] < max_n:
            buf = self._buf = np.empty(max(64, int(max_n)), dtype=SOCK_ENTRY)
        m, left, released = _recvmsg(hdr, ring.raw, buf.view(np.uint8).reshape(
            buf.shape[0], SOCK_ENTRY.itemsize), int(max_n), -1 if now is None else int(now),
            counters, self.forward_threshold, self.defer_release)
        if m < 0:                           # every queued entry still on its way: no call
            return buf[:0].copy(), left
        if self.connected and sock_table is not None:
            record_flow(sock_table, int(hdr[USER0 + U_RXHASH]), cpu, ncpus)
        if released:
            self.lock.acquire()             # the slots are already released: rmem >= queued
            try:
                hdr[USER0 + U_RMEM] = int(hdr[USER0 + U_RMEM]) - released
            finally:
                self.lock.release()
        # whole records (a structured copy goes field by field)
        return buf[:m].view(_ENTRY_VOID).copy().view(SOCK_ENTRY), left

    def produced_by(self, now: int, lat: int, limit: int | None = None) -> int:
        """The queued entries queued by now: stamped at most now + lat (a remote producer's
        entry is stamped lat after its enqueue, the reader's own CPU's at it). The reader
        counts them as there (it must not sleep on them) though it sees them only at their
        stamp; entries queued later, by a producer ahead in time, are not there yet. With
        limit, at most that many are counted (the queue is read no further)."""
        ring = self.ring
        cons, prod = ring.cons, ring.prod
        if prod <= cons:
            return 0
        if limit is not None and prod - cons > limit:
            prod = cons + limit
        k, _nxt = ring_visible(ring.raw, cons, prod, _ENTRY_TS, now + lat)
        return int(k)

    def next_visible(self, now: int) -> int:
        """When the first queued entry becomes visible (now if it already is; 0 if none)."""
        ring = self.ring
        cons, prod = ring.cons, ring.prod
        if prod <= cons:
            return 0
        k, nxt = ring_visible(ring.raw, cons, cons + 1, _ENTRY_TS, now)   # the first decides
        return now if k else int(nxt)


@kernel
def _enqueue(hdr, raw, ent, rcvbuf, empty_ok, connected, accept):
    """The body of UdpSocket.enqueue under the socket's lock, per skb in order, as
    __udp_queue_rcv_skb -> __udp_enqueue_schedule_skb do it (ent: raw SOCK_ENTRY rows):

    - a connected socket saves the skb's hash as sk_rxhash first (sock_rps_save_rxhash;
      the last skb's wins, and only a changed value is written), even for an skb then dropped;
    - the 6.18 receive-buffer rule: with rmem = sk_rmem_alloc, an skb of truesize `size` is
      accepted if the queue is empty (rmem == 0, unless rcvbuf > INT_MAX >> 1) or if
      rmem + size <= rcvbuf; an accepted skb charges its truesize; a refused one leaves rmem
      as it was and counts in sk_drops.

    Accepted skbs are copied into the ring in order. Returns (accepted, producer index
    before, queue was empty), accept[] marking them; accepted is -1 when the ring cannot
    hold them (nothing written). The caller publishes the producer index.
    """
    n = ent.shape[0]
    prod = np.int64(hdr[PROD])
    cons = np.int64(hdr[CONS])
    if connected:
        last = ent[n - 1]
        h = (np.uint64(last[16]) | (np.uint64(last[17]) << np.uint64(8))
             | (np.uint64(last[18]) << np.uint64(16)) | (np.uint64(last[19]) << np.uint64(24)))
        if hdr[USER0 + U_RXHASH] != h:
            hdr[USER0 + U_RXHASH] = h
    rmem = np.int64(hdr[USER0 + U_RMEM])
    n_acc = 0
    for i in range(n):
        r = ent[i]
        size = (np.int64(r[12]) | (np.int64(r[13]) << 8) | (np.int64(r[14]) << 16)
                | (np.int64(r[15]) << 24))
        if (rmem == 0 and empty_ok) or rmem + size <= rcvbuf:
            accept[i] = True
            rmem += size
            n_acc += 1
    if n_acc > raw.shape[0] - (prod - cons):
        for i in range(n):
            accept[i] = False
        return -1, prod, prod == cons
    cap = raw.shape[0]
    j = prod
    for i in range(n):
        if accept[i]:
            raw[j & (cap - 1)] = ent[i]
            j += 1
    hdr[USER0 + U_RMEM] = np.uint64(rmem)
    if n_acc < n:
        hdr[USER0 + U_DROPS] = np.uint64(np.int64(hdr[USER0 + U_DROPS]) + (n - n_acc))
    return n_acc, prod, prod == cons


@kernel
def _recvmsg(hdr, raw, out, max_n, now, counters, threshold, defer):
    """recvmsg's reading part: up to max_n entries, only those visible at now (>= 0), into
    out's first rows (raw SOCK_ENTRY rows); the slots are released after they are read.
    (read, still queued, truesize to give back now); read -1 if every queued entry is still
    on its way (then no call is counted)."""
    cons = np.int64(hdr[CONS])
    m = min(max(0, max_n), np.int64(hdr[PROD]) - cons)
    if now >= 0 and m > 0:
        k, _nxt = ring_visible(raw, cons, cons + m, _ENTRY_TS, now)   # m at most
        if k == 0:
            return -1, np.int64(hdr[PROD]) - cons, np.int64(0)
        m = min(m, k)
    counters[_RECVMSG_CALLS] += np.uint64(1)
    released = np.int64(0)
    if m > 0:
        released = _recv(hdr, raw, cons, out[:m], counters, threshold, defer)
        hdr[CONS] = np.uint64(cons + m)
    return m, np.int64(hdr[PROD]) - np.int64(hdr[CONS]), np.int64(released)


@kernel
def _recv(hdr, raw, cons, out, counters, threshold, defer):
    """udp_recvmsg's dequeue of out.shape[0] entries from slot index cons (raw SOCK_ENTRY
    rows, copied into out), the MIB and per-source delivered counts, and the lazy rmem
    release (udp_rmem_release, partial): returns the truesize to give back now."""
    m = out.shape[0]
    ring_read(raw, cons, m, out)
    rest = np.int64(hdr[PROD]) - cons - m
    sizes = np.empty(m, dtype=np.int64)
    for i in range(m):
        r = out[i]
        sizes[i] = (np.int64(r[12]) | (np.int64(r[13]) << 8) | (np.int64(r[14]) << 16)
                    | (np.int64(r[15]) << 24))
        src = np.int64(r[20])
        if src < MAX_SOURCES:
            counters[_SRC_DELIVERED0 + src] += np.uint64(r[22]) | (np.uint64(r[23]) << np.uint64(8))
    if defer:
        released, deficit, reader_q = _release_plan(sizes, np.int64(hdr[USER0 + U_DEFICIT]),
                                                    np.int64(hdr[USER0 + U_READER_Q]), rest,
                                                    threshold)
        hdr[USER0 + U_DEFICIT] = np.uint64(deficit)
        hdr[USER0 + U_READER_Q] = np.uint64(reader_q)
    else:
        released = sizes.sum()
    counters[_UDP_IN_DATAGRAMS] += np.uint64(m)
    counters[_USER_DATAGRAMS] += np.uint64(m)
    return released


def warm() -> None:
    """Compile (or load) this module's kernels with the argument types a run uses."""
    ring = Ring.local(SOCK_ENTRY, 4)
    ent = np.zeros((1, SOCK_ENTRY.itemsize), dtype=np.uint8)
    from emu.counters import cpu_block
    counters = cpu_block()
    _enqueue(ring.hdr, ring.raw, ent, 1 << 20, True, True, np.zeros(1, dtype=np.bool_))
    _recv(ring.hdr, ring.raw, 0, ent, counters, 1 << 18, True)
    _recvmsg(ring.hdr, ring.raw, ent, 1, 0, counters, 1 << 18, True)
    release_plan(np.zeros(1, dtype=np.int64), 0, 0, 0, 1)


def record_flow(sock_table: np.ndarray, hash_: int, cpu: int, ncpus: int) -> None:
    """sock_rps_record_flow_hash -> rps_record_sock_flow."""
    h = int(hash_) & 0xFFFFFFFF
    if not h:
        return
    mask = rps_cpu_mask(ncpus)
    val = (h & ~mask & 0xFFFFFFFF) | int(cpu)
    idx = h & (sock_table.shape[0] - 1)
    if int(sock_table[idx]) != val:
        sock_table[idx] = val


class SocketTable:
    """__udp4_lib_lookup for the emulated host: dport (and peer, if connected) -> socket."""

    def __init__(self, sockets: list[UdpSocket]):
        self.sockets = list(sockets)
        self._readers = np.array([s.reader_cpu for s in self.sockets], dtype=np.int64)
        self._delays: dict[tuple[int, int], np.ndarray] = {}    # (cpu, latency) -> delays
        self.port_map = np.full(65536, -1, dtype=np.int16)       # unconnected (wildcard) sockets
        self.has_connected = np.zeros(65536, dtype=bool)
        self._connected: dict[int, list[int]] = {}
        for i, s in enumerate(self.sockets):
            s.index = i
            if s.connected:
                self._connected.setdefault(s.port, []).append(i)
                self.has_connected[s.port] = True
            else:
                if self.port_map[s.port] >= 0:
                    raise ValueError(f"UDP port {s.port} is bound twice (no SO_REUSEPORT here)")
                self.port_map[s.port] = i

    def __len__(self) -> int:
        return len(self.sockets)

    def delays(self, cpu: int, latency: int) -> np.ndarray:
        """Per socket, how long after an entry is queued by cpu its reader sees it: at once
        if it reads on cpu, a cache line's transfer (latency) later on another CPU (an
        entry is stamped with its queueing time plus this)."""
        key = (cpu, latency)
        delay = self._delays.get(key)
        if delay is None:
            delay = self._delays[key] = np.where(self._readers == cpu, 0, latency).astype(
                np.int64)
        return delay

    def readers_mask(self, counts: np.ndarray) -> int:
        """The CPUs reading the sockets a batch goes to (counts per group: no socket, then
        socket 0, 1, ...), as a bit mask."""
        mask = 0
        for i in np.flatnonzero(counts[1:]).tolist():
            mask |= 1 << int(self._readers[i])
        return mask

    @property
    def has_connected_sockets(self) -> bool:
        return bool(self._connected)

    def lookup(self, dport: np.ndarray, saddr: np.ndarray | None = None,
               sport: np.ndarray | None = None) -> np.ndarray:
        """Socket index per datagram (-1: none).

        compute_score: a connected socket matches only its peer and then outranks a wildcard
        socket of the same port; a non-matching connected socket is never chosen.
        """
        if not self._connected:
            d = np.asarray(dport)
            if d.dtype.kind not in "iu":
                d = d.astype(np.int64)
            return self.port_map[d].astype(np.int32)
        dport = np.asarray(dport, dtype=np.int64)
        idx = self.port_map[dport].astype(np.int32)
        if dport.size == 0:
            return idx
        cand = self.has_connected[dport]
        if not cand.any():
            return idx
        taken = np.zeros(dport.shape[0], dtype=bool)
        for port in np.unique(dport[cand]):
            on_port = cand & (dport == port)
            for si in self._connected[int(port)]:
                s = self.sockets[si]
                m = on_port & ~taken
                if s.peer_addr is not None and saddr is not None:
                    m &= np.asarray(saddr) == s.peer_addr
                if s.peer_port is not None and sport is not None:
                    m &= np.asarray(sport) == s.peer_port
                idx[m] = si
                taken |= m
        return idx
