"""cpus.gro: TCP/IPv4 GRO within one NAPI poll (dev_gro_receive / tcp_gro_receive)."""

import struct

import numpy as np
import pytest

import cpus.gro as gro
from cpus.gro import gro_receive_batch, ipv4_csum_ok
from emu.counters import C, NAPI_GRO_FLUSHED0, NAPI_GRO_MERGED0, cpu_block
from emu.skb import HEAD, SKB

MSS = 1448
ETH_DST = bytes.fromhex("020000000002")
ETH_SRC = bytes.fromhex("020000000001")

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, l4len, ipid=0, ttl=64, tos=0, df=True, frag=0, options=b""):
    ihl = 5 + len(options) // 4
    tot = ihl * 4 + l4len
    fo = (0x4000 if df else 0) | frag
    h = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, tos, tot, ipid, fo, ttl, proto, 0,
                    bytes(src), bytes(dst)) + options
    c = _csum(h)
    return h[:10] + struct.pack("!H", c) + h[12:]


def frame_row(frame: bytes, wire_len: int, hash_=0, l4_hash=1, seq=0, queue=0):
    r = np.zeros(1, dtype=SKB)
    b = frame[:HEAD]
    r["head"][0, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    r["len"] = wire_len
    r["segs"] = 1
    r["hash"] = hash_
    r["l4_hash"] = l4_hash
    r["seq"] = seq
    r["queue"] = queue
    return r


def tcp(seq, payload=MSS, *, src=(10, 0, 0, 1), dst=(10, 0, 0, 2), sport=40000, dport=80,
        ack=1, flags=ACK, window=512, opts=b"", ipid=None, ttl=64, tos=0, df=True,
        hash_=0xABCD0003, pad_to=None, nseq=0):
    """One TCP/IPv4 frame as an SKB row; payload bytes are not materialised."""
    thlen = 20 + len(opts)
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, (thlen // 4) << 4,
                     flags, window, 0, 0) + opts
    iid = (seq // MSS) & 0xFFFF if ipid is None else ipid
    ip = ipv4(src, dst, 6, thlen + payload, ipid=iid, ttl=ttl, tos=tos, df=df)
    wire = 14 + len(ip) + thlen + payload
    f = ETH_DST + ETH_SRC + b"\x08\x00" + ip + th
    if pad_to and wire < pad_to:
        wire = pad_to
    return frame_row(f, wire, hash_=hash_, seq=nseq)


def udp(payload=100, *, sport=5000, dport=6000, hash_=0x77, nseq=0):
    ip = ipv4((10, 0, 0, 9), (10, 0, 0, 2), 17, 8 + payload, df=False)
    uh = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
    f = ETH_DST + ETH_SRC + b"\x08\x00" + ip + uh + bytes(min(payload, 64))
    return frame_row(f, 14 + 20 + 8 + payload, hash_=hash_, seq=nseq)


def batch(*rows):
    b = np.concatenate(rows)
    b["seq"] = np.arange(len(b))
    return b


def flow(n, start=0, payload=MSS, **kw):
    return [tcp(start + k * payload, payload, **kw) for k in range(n)]


def run(b, **kw):
    c = cpu_block()
    out = gro_receive_batch(b, c, queue=3, **kw)
    return out, c


def tcp_flags(out):
    return out["head"][:, 14 + 20 + 13]


def ip_totlen(out):
    return (out["head"][:, 16].astype(int) << 8) | out["head"][:, 17]


# ----------------------------------------------------------------------------------------

def test_ten_in_order_segments_merge_into_one():
    b = batch(*flow(10))
    out, c = run(b)
    assert len(out) == 1
    assert out["segs"][0] == 10
    assert out["len"][0] == b["len"][0] + 9 * MSS
    assert out["seq"][0] == b["seq"][0]
    assert ip_totlen(out)[0] == out["len"][0] - 14          # inet_gro_complete
    assert ipv4_csum_ok(out["head"]).all()
    assert c[C.GRO_RECEIVED] == 10 and c[C.GRO_MERGED] == 9 and c[C.GRO_HELD] == 1
    assert c[C.GRO_NORMAL] == 0 and c[C.GRO_FLUSHED] == 1
    assert c[NAPI_GRO_MERGED0 + 3] == 9 and c[NAPI_GRO_FLUSHED0 + 3] == 1
    assert b["segs"].sum() == 10 and b["len"][0] == 14 + 40 + MSS       # input untouched


def test_out_of_order_breaks_the_aggregate():
    segs = flow(6)
    b = batch(segs[0], segs[1], segs[2], segs[4], segs[5], segs[3])
    out, c = run(b)
    # [0,1,2] completed when 4 arrives; 4,5 merge; 3 (behind) flushes [4,5] and is held
    assert out["segs"].tolist() == [3, 2, 1]
    assert out["seq"].tolist() == [0, 3, 5]
    assert c[C.GRO_FLUSHED] == 3 and c[C.GRO_MERGED] == 3 and c[C.GRO_HELD] == 3


def test_psh_completes_the_aggregate_immediately():
    s = flow(5)
    s[2] = tcp(2 * MSS, flags=ACK | PSH)
    u = udp()
    b = batch(s[0], s[1], s[2], u, s[3], s[4])
    out, c = run(b)
    assert out["segs"].tolist() == [3, 1, 2]
    assert out["seq"].tolist() == [0, 3, 4]          # aggregate goes up before the UDP frame
    assert tcp_flags(out)[0] & PSH                  # PSH ORed into the aggregate's header
    assert not tcp_flags(out)[2] & PSH


def test_psh_on_a_new_flow_goes_up_as_normal():
    b = batch(tcp(0, flags=ACK | PSH), tcp(MSS))
    out, c = run(b)
    assert out["segs"].tolist() == [1, 1]
    assert c[C.GRO_NORMAL] == 1 and c[C.GRO_HELD] == 1


def test_short_segment_completes_after_merge():
    b = batch(tcp(0), tcp(MSS), tcp(2 * MSS, payload=100), tcp(2 * MSS + 100))
    out, _ = run(b)
    assert out["segs"].tolist() == [3, 1]
    assert out["len"][0] == 14 + 40 + 2 * MSS + 100


def test_two_interleaved_flows_merge_separately():
    a = flow(6, sport=1111)
    z = flow(6, sport=2222)                      # same NIC hash: same bucket, told apart by ports
    b = batch(*[r for pair in zip(a, z) for r in pair])
    out, c = run(b)
    assert len(out) == 2
    assert out["segs"].tolist() == [6, 6]
    assert out["seq"].tolist() == [0, 1]         # same bucket: oldest first
    assert c[C.GRO_MERGED] == 10


@pytest.mark.parametrize("change", [
    dict(ack=2),
    dict(opts=b"\x01\x01\x08\x0a" + struct.pack("!II", 99, 1)),
    dict(ttl=63),
    dict(tos=0x02),
    dict(window=1024),                           # part of tcp_flag_word(): flushes too
    dict(flags=ACK | ECE),
])
def test_header_difference_flushes(change):
    base = dict(opts=b"\x01\x01\x08\x0a" + struct.pack("!II", 7, 1))
    kw = dict(base, **change)
    b = batch(tcp(0, **base), tcp(MSS, **base), tcp(2 * MSS, **kw), tcp(3 * MSS, **kw))
    out, c = run(b)
    assert out["segs"].tolist() == [2, 2]
    assert c[C.GRO_FLUSHED] == 2


def test_cwr_flushes_and_is_held():
    b = batch(tcp(0), tcp(MSS), tcp(2 * MSS, flags=ACK | CWR), tcp(3 * MSS))
    out, _ = run(b)
    assert out["segs"].tolist() == [2, 2]


def test_pure_ack_flushes_the_flow_and_passes_through():
    b = batch(tcp(0), tcp(MSS), tcp(2 * MSS, payload=0), tcp(2 * MSS))
    out, c = run(b)
    assert out["segs"].tolist() == [2, 1, 1]
    assert out["len"][1] == 54
    assert c[C.GRO_NORMAL] == 1


def test_padded_frame_is_not_merged():
    b = batch(tcp(0), tcp(MSS), tcp(2 * MSS, payload=2, pad_to=60), tcp(2 * MSS + 2))
    out, c = run(b)
    # padding (tot_len != frame length) flushes the skb: the aggregate is completed, the
    # padded frame goes up unchanged, the next one starts a new aggregate
    assert out["segs"].tolist() == [2, 1, 1]
    assert out["len"][1] == 60


def test_ip_id_rules():
    inc = [tcp(k * MSS, ipid=100 + k) for k in range(4)]
    assert run(batch(*inc))[0]["segs"].tolist() == [4]
    fixed_df = [tcp(k * MSS, ipid=7) for k in range(4)]
    assert run(batch(*fixed_df))[0]["segs"].tolist() == [4]
    fixed_nodf = [tcp(k * MSS, ipid=7, df=False) for k in range(3)]
    assert run(batch(*fixed_nodf))[0]["segs"].tolist() == [1, 1, 1]
    jump = [tcp(0, ipid=1), tcp(MSS, ipid=2), tcp(2 * MSS, ipid=5)]
    assert run(batch(*jump))[0]["segs"].tolist() == [2, 1]


def test_size_limit():
    b = batch(*flow(50))
    out, _ = run(b)
    # p->len (IP level) + len must stay < 65536: 1488 + 44 * 1448 = 65200 fits, one more not
    assert out["segs"].tolist() == [45, 5]
    assert out["len"][0] - 14 < 65536
    out2, _ = run(b, gro_max_size=10000)
    assert out2["segs"].max() == 6 and out2["segs"].sum() == 50


def test_bucket_overflow_completes_the_oldest():
    # nine flows, same bucket (hash & 7 == 3), different hashes
    rows = [tcp(0, sport=1000 + k, hash_=(k << 3) | 3) for k in range(9)]
    b = batch(*rows)
    out, c = run(b)
    assert out["seq"].tolist() == list(range(9))
    assert c[C.GRO_HELD] == 9 and c[C.GRO_FLUSHED] == 9
    # the oldest was sent up when the ninth arrived, before anything later in the poll
    b2 = batch(*rows, udp())
    out2, _ = run(b2)
    assert out2["seq"].tolist() == [0, 9, 1, 2, 3, 4, 5, 6, 7, 8]


def test_final_flush_goes_bucket_by_bucket():
    b = batch(tcp(0, sport=1, hash_=0x13), tcp(0, sport=2, hash_=0x11),
              tcp(0, sport=3, hash_=0x23), tcp(0, sport=4, hash_=0x10))
    out, _ = run(b)
    assert out["seq"].tolist() == [3, 1, 0, 2]   # bucket 0, bucket 1, bucket 3 (oldest first)


def test_udp_passes_through_untouched_without_the_tcp_loop(monkeypatch):
    b = batch(*[udp(100 + k, hash_=k) for k in range(20)])
    monkeypatch.setattr(gro, "_Agg", None)        # the per-frame path would need it
    out, c = run(b)
    assert out.tobytes() == b.tobytes()
    assert c[C.GRO_RECEIVED] == 20 and c[C.GRO_NORMAL] == 20
    assert c[C.GRO_HELD] == 0 and c[C.GRO_FLUSHED] == 0


def test_non_candidates_keep_their_order_around_tcp():
    ip_opt = ipv4((10, 0, 0, 1), (10, 0, 0, 2), 6, 20 + MSS, options=b"\x01\x01\x01\x00")
    th = struct.pack("!HHIIBBHHH", 40000, 80, 5 * MSS, 1, 5 << 4, ACK, 512, 0, 0)
    with_opts = frame_row(ETH_DST + ETH_SRC + b"\x08\x00" + ip_opt + th, 14 + 24 + 20 + MSS)
    b = batch(udp(), tcp(0), with_opts, tcp(MSS), udp())
    out, c = run(b)
    assert out["seq"].tolist() == [0, 2, 4, 1]
    assert out["segs"].tolist() == [1, 1, 1, 2]
    assert c[C.GRO_NORMAL] == 3


def test_bad_ip_checksum_is_not_merged():
    r = tcp(MSS)
    r["head"][0, 24] ^= 0xFF
    out, c = run(batch(tcp(0), r, tcp(2 * MSS)))
    # the bad frame goes up as is and leaves the aggregate alone; the next one is not
    # contiguous with it and starts a new aggregate
    assert out["segs"].tolist() == [1, 1, 1]
    assert out["seq"].tolist() == [1, 0, 2]
    assert c[C.GRO_NORMAL] == 1 and c[C.GRO_HELD] == 2


def test_segments_are_conserved_in_a_random_mix():
    rng = np.random.default_rng(7)
    rows = []
    nxt = {f: 0 for f in range(6)}
    for _ in range(400):
        kind = rng.integers(0, 10)
        if kind == 0:
            rows.append(udp(int(rng.integers(10, 1400)), hash_=int(rng.integers(0, 1 << 32))))
            continue
        f = int(rng.integers(0, 6))
        pay = MSS if rng.random() < 0.9 else int(rng.integers(0, MSS))
        seq = nxt[f] if rng.random() < 0.9 else nxt[f] + MSS
        flags = ACK | (PSH if rng.random() < 0.05 else 0)
        rows.append(tcp(seq, pay, sport=2000 + f, hash_=(f * 0x9E3779B1) & 0xFFFFFFFF,
                        flags=flags, ipid=0, ack=1))
        nxt[f] = seq + pay
    b = batch(*rows)
    out, c = run(b)
    assert int(out["segs"].sum()) == len(b)
    assert c[C.GRO_RECEIVED] == c[C.GRO_MERGED] + c[C.GRO_HELD] + c[C.GRO_NORMAL]
    assert c[C.GRO_HELD] == c[C.GRO_FLUSHED]
    assert len(out) == c[C.GRO_NORMAL] + c[C.GRO_FLUSHED]
    assert len(np.unique(out["seq"])) == len(out)
    # bytes conserved: every merged frame contributes only its payload
    hdr = 14 + 20 + 20
    assert int(out["len"].sum()) == int(b["len"].sum()) - hdr * int(c[C.GRO_MERGED])
    assert ipv4_csum_ok(out["head"][out["head"][:, 23] == 6]).all()


def test_empty_batch():
    out, c = run(np.zeros(0, dtype=SKB))
    assert len(out) == 0 and c[C.GRO_RECEIVED] == 0


LONE = {
    "held": lambda: tcp(0),
    "psh": lambda: tcp(0, flags=ACK | PSH),
    "pure ack": lambda: tcp(0, payload=0),
    "padded": lambda: tcp(0, payload=2, pad_to=60),
    "no df": lambda: tcp(0, df=False),
    "options": lambda: tcp(0, opts=b"\x01\x01\x08\x0a" + bytes(8)),
}


@pytest.mark.parametrize("what", sorted(LONE))
@pytest.mark.parametrize("where", [0, 1, 3])
@pytest.mark.parametrize("bad_csum", [False, True])
def test_a_lone_tcp_frame_takes_the_short_way_to_the_same_result(what, where, bad_csum):
    # A batch with one TCP frame (the common case at low rates) skips the general
    # machinery: same skbs in the same order, same counters, as the general way.
    r = LONE[what]()
    if bad_csum:
        r["head"][0, 24] ^= 0xFF
    rows = [udp(hash_=0x100 + k) for k in range(3)]
    rows.insert(where, r)
    b = batch(*rows)
    out, c = run(b)
    ref_c = cpu_block()
    ref_b = b.copy()
    ref = gro._gro_general(ref_b, ref_b.view(np.uint8).reshape(len(b), -1), ref_c, 3, 65536)
    assert out.tobytes() == ref.tobytes()
    assert c.tolist() == ref_c.tolist()
    assert c[C.GRO_RECEIVED] == len(b)
