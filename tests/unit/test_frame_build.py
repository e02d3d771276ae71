"""nic.frames.build / Source.make_batch against an independent pure-numpy reference.

The reference copies the template head of each frame's flow, patches the IPv4 id, recomputes
the IPv4 header checksum (RFC 1071 over head[14:34], written here from scratch), patches the
TCP sequence number and fills the SKB descriptor fields. Records are compared byte for byte.
"""

import numpy as np
import pytest

from emu.skb import HEAD, SKB
from nic.frames import FlowState, build, flow_templates, stamp
from nic.rss import Rss
from nic.traffic import Source

PROTO_TCP = 6


def _cfg(**kw):
    cfg = {"proto": "udp", "frame_len": 128, "flows": 4, "dst_ports": [9000, 9001],
           "src_net": "10.0.0.0", "dst_ip": "192.168.0.1", "queue": -1}
    cfg.update(kw)
    return cfg


def _rss(nq=4, udp="sdfn", tcp="sdfn"):
    key = bytes(range(7, 7 + 52))
    return Rss(key, [i % nq for i in range(128)], udp, tcp)


# -- the reference ------------------------------------------------------------------------

def _rfc1071(hdr: np.ndarray) -> int:
    """One's complement of the one's complement sum of the big-endian 16-bit words."""
    b = [int(x) for x in hdr]
    s = 0
    for k in range(0, len(b), 2):
        s += (b[k] << 8) | b[k + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _verifies(hdr: np.ndarray) -> bool:
    b = [int(x) for x in hdr]
    s = sum((b[k] << 8) | b[k + 1] for k in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def ref_build(flows, flow_idx, ts=None, seq0=0, keep=None, state=None, flow_hash=None,
              flow_l4=None, flow_queue=None, src_index=0):
    """(records, next_id, next_seq): what build should return and leave as sender state."""
    st = flows.state if state is None else state
    next_id = [int(x) for x in st.next_id]
    next_seq = [int(x) for x in st.next_seq]
    tcp = int(flows.proto[0]) == PROTO_TCP
    n = len(flow_idx)
    recs = []
    for i in range(n):
        f = int(flow_idx[i])
        ip_id = next_id[f]
        next_id[f] = (ip_id + 1) % (1 << 16)
        tseq = next_seq[f]
        if tcp:
            next_seq[f] = (tseq + flows.payload_len) % (1 << 32)
        if keep is not None and not keep[i]:
            continue
        head = flows.heads[f].copy()
        head[18] = ip_id >> 8
        head[19] = ip_id & 0xFF
        if tcp:
            head[38:42] = list(tseq.to_bytes(4, "big"))
        head[24] = head[25] = 0
        c = _rfc1071(head[14:34])
        head[24] = c >> 8
        head[25] = c & 0xFF
        r = np.zeros(1, dtype=SKB)
        r["seq"] = int(seq0[i]) if isinstance(seq0, np.ndarray) else int(seq0) + i
        r["ts"] = 0 if ts is None else int(ts[i])
        r["hash"] = 0 if flow_hash is None else int(flow_hash[f])
        r["len"] = flows.frame_len
        r["segs"] = 1
        r["queue"] = 0 if flow_queue is None else int(flow_queue[f])
        r["l4_hash"] = 0 if flow_l4 is None else int(flow_l4[f])
        r["src"] = src_index
        r["sw_hash"] = 0
        r["head"][0] = head
        recs.append(r)
    out = np.concatenate(recs) if recs else np.zeros(0, dtype=SKB)
    return (out, np.array(next_id, dtype=np.uint16), np.array(next_seq, dtype=np.uint32))


def _same_records(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == SKB
    assert got.shape == want.shape
    g = got.view(np.uint8).reshape(len(got), SKB.itemsize)
    w = want.view(np.uint8).reshape(len(want), SKB.itemsize)
    if len(got):
        bad = np.nonzero((g != w).any(axis=1))[0]
        assert bad.size == 0, f"records {bad[:10].tolist()} differ; first bytes at " \
                              f"{np.nonzero(g[bad[0]] != w[bad[0]])[0].tolist()}"


def _flows(proto, frame_len, n=6, seed=3, index=0):
    return flow_templates(_cfg(proto=proto, frame_len=frame_len, flows=n), n, seed, index)


def _near_wrap(flows, rng):
    """Start some flows right below the IPv4 id and TCP seq wrap points."""
    n = len(flows)
    flows.state.next_id[: n // 2] = (0xFFFF - rng.integers(0, 3, n // 2)).astype(np.uint16)
    flows.state.next_seq[: n // 2] = ((1 << 32) - 1 - rng.integers(0, 3000, n // 2)).astype(np.uint32)


# -- reference sanity: the reference is itself right on a hand-checked header ------------

def test_reference_checksum_known_header():
    hdr = np.frombuffer(bytes.fromhex("450000730000400040110000c0a80001c0a800c7"), np.uint8)
    assert _rfc1071(hdr) == 0xB861
    fixed = np.frombuffer(bytes.fromhex("45000073000040004011b861c0a80001c0a800c7"), np.uint8)
    assert _verifies(fixed) and _rfc1071(fixed) == 0


# -- build --------------------------------------------------------------------------------

CASES = [("udp", 128), ("udp", 60), ("tcp", 1514), ("tcp", 64)]


@pytest.mark.parametrize("proto,frame_len", CASES)
@pytest.mark.parametrize("keep_kind", ["none", "random", "all_false", "all_true"])
@pytest.mark.parametrize("seq_kind", ["int", "array"])
def test_build_matches_reference(proto, frame_len, keep_kind, seq_kind):
    rng = np.random.default_rng([7, frame_len, len(keep_kind), len(seq_kind)])
    f = _flows(proto, frame_len)
    _near_wrap(f, rng)
    twin = f.state.copy()
    flow_hash = rng.integers(0, 1 << 32, len(f), dtype=np.uint64).astype(np.uint32)
    flow_l4 = rng.integers(0, 2, len(f)).astype(np.uint8)
    flow_queue = rng.integers(0, 4, len(f)).astype(np.uint8)
    for batch in range(2):                     # the sender state carries across batches
        n = int(rng.integers(1, 300))
        fi = rng.integers(0, len(f), n)
        ts = np.sort(rng.integers(0, 1 << 40, n)).astype(np.uint64)
        keep = {"none": None, "random": rng.random(n) < 0.6,
                "all_false": np.zeros(n, dtype=bool), "all_true": np.ones(n, dtype=bool)}[keep_kind]
        seq0 = (int(rng.integers(0, 1 << 62)) if seq_kind == "int"
                else rng.integers(0, 1 << 62, n).astype(np.uint64))
        want, nid, nseq = ref_build(f, fi, ts, seq0, keep, twin, flow_hash, flow_l4,
                                    flow_queue, src_index=5)
        got = build(f, fi, ts, seq0, keep, flow_hash=flow_hash, flow_l4=flow_l4,
                    flow_queue=flow_queue, src_index=5)
        _same_records(got, want)
        expect_n = n if keep is None else int(keep.sum())
        assert len(got) == expect_n
        # every frame consumed id (and TCP seq) space, dropped ones included
        assert f.state.next_id.tolist() == nid.tolist()
        assert f.state.next_seq.tolist() == nseq.tolist()
        twin = FlowState(nid, nseq)
        assert all(_verifies(r[14:34]) for r in got["head"])


@pytest.mark.parametrize("proto,frame_len", CASES)
def test_build_defaults_zero_descriptor_fields(proto, frame_len):
    f = _flows(proto, frame_len)
    twin = f.state.copy()
    fi = np.array([0, 1, 1, 5, 0, 2])
    want, _, _ = ref_build(f, fi, state=twin)
    got = build(f, fi)
    _same_records(got, want)
    assert got["seq"].tolist() == list(range(6))
    assert (got["ts"] == 0).all() and (got["hash"] == 0).all()
    assert (got["queue"] == 0).all() and (got["l4_hash"] == 0).all() and (got["src"] == 0).all()


def test_seq0_int_numbers_every_frame_kept_ones_keep_their_index():
    f = _flows("udp", 128)
    keep = np.array([False, True, False, False, True, True, False])
    got = build(f, np.arange(7) % len(f), seq0=1000, keep=keep)
    assert got["seq"].tolist() == [1001, 1004, 1005]
    seqs = np.array([9, 8, 7, 6, 5, 4, 3], dtype=np.uint64)
    got = build(f, np.arange(7) % len(f), seq0=seqs, keep=keep)
    assert got["seq"].tolist() == [8, 5, 4]


@pytest.mark.parametrize("as_array", [False, True])
def test_seq_above_2_pow_53_is_exact(as_array):
    # regression: numba typed `seq0 + i` (uint64 + int64) as float64, losing the low bits
    f = _flows("udp", 128)
    s = (1 << 60) + 3
    seq0 = np.array([s, s + 1, s + 2], dtype=np.uint64) if as_array else s
    got = build(f, np.zeros(3, dtype=np.int64), seq0=seq0)
    assert got["seq"].tolist() == [s, s + 1, s + 2]


def test_build_ids_and_tcp_seq_contiguous_per_flow_with_drops():
    f = _flows("tcp", 1514, n=3, seed=11)
    id0 = f.state.next_id.astype(np.int64).copy()
    seq0 = f.state.next_seq.astype(np.int64).copy()
    rng = np.random.default_rng(4)
    fi = rng.integers(0, 3, 200)
    keep = rng.random(200) < 0.5
    got = build(f, fi, keep=keep)
    ids = (got["head"][:, 18].astype(np.int64) << 8) | got["head"][:, 19]
    seq = got["head"][:, 38:42].copy().view(">u4").ravel().astype(np.int64)
    kept_fi = fi[keep]
    for fl in range(3):
        pos = np.nonzero(fi == fl)[0]                     # frame number within the flow
        k = keep[pos]
        assert ids[kept_fi == fl].tolist() == ((id0[fl] + np.arange(len(pos))[k]) % 65536).tolist()
        assert seq[kept_fi == fl].tolist() == \
            ((seq0[fl] + 1460 * np.arange(len(pos))[k]) % (1 << 32)).tolist()
        assert int(f.state.next_id[fl]) == (id0[fl] + len(pos)) % 65536
        assert int(f.state.next_seq[fl]) == (seq0[fl] + 1460 * len(pos)) % (1 << 32)


def test_udp_state_seq_untouched_and_header_bytes_unpatched():
    f = _flows("udp", 128)
    seq_before = f.state.next_seq.copy()
    got = build(f, np.arange(40) % len(f))
    assert (f.state.next_seq == seq_before).all()
    # a UDP frame's bytes 38..41 are its length and checksum, as in the template
    assert (got["head"][:, 38:42] == f.heads[np.arange(40) % len(f)][:, 38:42]).all()


def test_build_with_explicit_state_advances_it_not_flows_state():
    f = _flows("tcp", 200)
    before_id, before_seq = f.state.next_id.copy(), f.state.next_seq.copy()
    st = f.state.copy()
    fi = np.array([1, 1, 3, 1])
    want, nid, nseq = ref_build(f, fi, state=f.state.copy())
    got = build(f, fi, state=st)
    _same_records(got, want)
    assert (f.state.next_id == before_id).all() and (f.state.next_seq == before_seq).all()
    assert st.next_id.tolist() == nid.tolist() and st.next_seq.tolist() == nseq.tolist()


def test_build_does_not_modify_templates_and_empty_batch():
    f = _flows("tcp", 1514)
    heads = f.heads.copy()
    build(f, np.arange(50) % len(f), keep=np.arange(50) % 3 == 0)
    assert (f.heads == heads).all()
    st = f.state.copy()
    out = build(f, np.zeros(0, dtype=np.int64))
    assert out.dtype == SKB and out.shape == (0,)
    assert (f.state.next_id == st.next_id).all() and (f.state.next_seq == st.next_seq).all()


# -- stamp ---------------------------------------------------------------------------------

@pytest.mark.parametrize("proto,frame_len", CASES)
def test_stamp_with_counters_copy_leaves_flows_state(proto, frame_len):
    f = _flows(proto, frame_len)
    before_id, before_seq = f.state.next_id.copy(), f.state.next_seq.copy()
    ctr = f.state.copy()
    fi = np.array([0, 2, 2, 4, 0, 5, 5, 5])
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 0], dtype=bool)
    want, nid, nseq = ref_build(f, fi, keep=keep, state=f.state.copy())
    out = stamp(f, fi, counters=ctr, keep=keep)
    assert out.shape == (int(keep.sum()), HEAD) and out.dtype == np.uint8
    assert (out == want["head"]).all()
    assert (f.state.next_id == before_id).all() and (f.state.next_seq == before_seq).all()
    assert ctr.next_id.tolist() == nid.tolist() and ctr.next_seq.tolist() == nseq.tolist()
    # without counters the same frames come out and flows.state advances
    again = stamp(f, fi, keep=keep)
    assert (again == out).all()
    assert f.state.next_id.tolist() == nid.tolist() and f.state.next_seq.tolist() == nseq.tolist()


# -- Source.make_batch ---------------------------------------------------------------------

def _source(proto, frame_len, index, flows=8, seed=5):
    cfg = _cfg(proto=proto, frame_len=frame_len, flows=flows, pattern="constant",
               rate_pps=1_000_000.0, dst_ports=[9000, 9001, 9002, 5201])
    return Source(cfg, index, _rss(), seed)


@pytest.mark.parametrize("proto,frame_len", CASES)
@pytest.mark.parametrize("index", [0, 3])
def test_make_batch_matches_reference(proto, frame_len, index):
    src = _source(proto, frame_len, index)
    assert len(set(src.flow_queue.tolist())) > 1           # descriptors really vary
    rng = np.random.default_rng([index, frame_len])
    twin = src.flows.state.copy()
    seq = 0
    for keep_kind in ["none", "random", "all_false", "all_true", "random"]:
        n = int(rng.integers(1, 200))
        fi = rng.integers(0, len(src.flows), n)
        ts = np.sort(rng.integers(0, 1 << 33, n)).astype(np.uint64)
        keep = {"none": None, "random": rng.random(n) < 0.5,
                "all_false": np.zeros(n, dtype=bool), "all_true": np.ones(n, dtype=bool)}[keep_kind]
        seq0 = seq if keep_kind != "all_true" else np.arange(seq, seq + n, dtype=np.uint64)[::-1].copy()
        want, nid, nseq = ref_build(src.flows, fi, ts, seq0, keep, twin, src.flow_hash,
                                    src.flow_l4, src.flow_queue, src_index=index)
        got = src.make_batch(ts, fi, seq0, keep=keep)
        _same_records(got, want)
        assert (got["src"] == index).all()
        assert (got["queue"] == src.flow_queue[fi if keep is None else fi[keep]]).all()
        assert src.flows.state.next_id.tolist() == nid.tolist()
        assert src.flows.state.next_seq.tolist() == nseq.tolist()
        twin = FlowState(nid, nseq)
        seq += n


def test_make_batch_hash_fields_match_rss_of_built_heads():
    src = _source("tcp", 1514, 1)
    out = src.make_batch(np.arange(30, dtype=np.uint64), np.arange(30) % 8, 0)
    h, l4 = src.rss.hash_heads(out["head"])
    assert (out["hash"] == h).all() and (out["l4_hash"] == l4).all()
    assert (out["queue"] == src.rss.queue_of(h)).all()
