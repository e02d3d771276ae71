"""RSS: the NIC's Toeplitz hash over packet headers and the indirection table lookup.

Mirrors what the hardware does before DMA (82599 datasheet §7.1.2.8, mlx5 RQT) and what the
driver reports with skb_set_hash() (ixgbe_rx_hash, mlx5e_skb_set_hash): a 32-bit hash and its
type, L4 when the ports were hashed, L3 otherwise. The queue is indir[hash & (size - 1)]
(ethtool_rxfh_indir_default fills indir[i] = i % rx_queues).

Only IPv4 is parsed: the traffic sources emit nothing else. Other ethertypes get hash 0,
type L3, as a NIC that has no RSS type for them reports no hash (and lands them on
indir[0]).
"""

from __future__ import annotations

import numpy as np

ETH_HLEN = 14
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17
HASH_FIELDS = ("sd", "sdfn")  # ethtool -N rx-flow-hash: IPs only, or IPs and L4 ports


def toeplitz_hash(key: bytes, data: bytes) -> int:
    """The Toeplitz hash, bit by bit (reference §5.1; selftests/net/toeplitz.c toeplitz()).

    For every set bit i of data (MSB of byte 0 first) the 32-bit key window starting at key
    bit i is XORed into the result. The key needs len(data) + 4 bytes.
    """
    if len(key) < len(data) + 4:
        raise ValueError(f"a {len(data)}-byte input needs a key of at least {len(data) + 4} bytes "
                         f"(got {len(key)})")
    k = int.from_bytes(key, "big")
    kbits = 8 * len(key)
    d = int.from_bytes(data, "big")
    dbits = 8 * len(data)
    result = 0
    for i in range(dbits):
        if (d >> (dbits - 1 - i)) & 1:
            result ^= (k >> (kbits - 32 - i)) & 0xFFFFFFFF
    return result


class Toeplitz:
    """Toeplitz with one lookup table per input byte position, for numpy batches.

    table[p, v] is the XOR of the key windows of the bits set in byte value v at position p,
    so a row's hash is the XOR of table[p, row[p]] over its bytes (XOR is linear, so bits
    combine independently).
    """

    def __init__(self, key: bytes):
        key = bytes(key)
        if len(key) < 5:
            raise ValueError(f"the RSS key must be at least 5 bytes (got {len(key)})")
        self.key = key
        self.max_len = len(key) - 4
        k = int.from_bytes(key, "big")
        kbits = 8 * len(key)
        nbits = 8 * self.max_len
        windows = np.array([(k >> (kbits - 32 - i)) & 0xFFFFFFFF for i in range(nbits)],
                           dtype=np.uint32).reshape(self.max_len, 8)
        values = np.arange(256, dtype=np.uint32)
        bits = ((values[:, None] >> (7 - np.arange(8, dtype=np.uint32))) & 1).astype(bool)  # [256, 8]
        contrib = np.where(bits[None, :, :], windows[:, None, :], np.uint32(0))  # [pos, 256, 8]
        self.table = np.bitwise_xor.reduce(contrib, axis=2).astype(np.uint32)  # [pos, 256]

    def hash_batch(self, data: np.ndarray) -> np.ndarray:
        """Hash each row of a uint8 [n, k] array; uint32 [n]."""
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2:
            raise ValueError("hash_batch takes a 2-D uint8 array, one input per row")
        n, k = data.shape
        if k > self.max_len:
            raise ValueError(f"inputs of {k} bytes need a key of at least {k + 4} bytes "
                             f"(got {len(self.key)})")
        if k == 0 or n == 0:
            return np.zeros(n, dtype=np.uint32)
        parts = self.table[np.arange(k)[None, :], data]
        return np.bitwise_xor.reduce(parts, axis=1).astype(np.uint32)


class Rss:
    """The NIC's RSS configuration: key, indirection table and per-protocol hash fields.

    udp4_hash / tcp4_hash are ethtool's rx-flow-hash fields: "sdfn" hashes IPv4 src, dst and
    the L4 ports (hash type L4), "sd" the addresses only (type L3).
    """

    def __init__(self, key: bytes, indir: list[int], udp4_hash: str = "sdfn", tcp4_hash: str = "sdfn"):
        for name, v in (("udp4_hash", udp4_hash), ("tcp4_hash", tcp4_hash)):
            if v not in HASH_FIELDS:
                raise ValueError(f"{name} must be 'sd' or 'sdfn' (got {v!r})")
        n = len(indir)
        if n == 0 or n & (n - 1):
            raise ValueError(f"the indirection table size must be a power of two (got {n})")
        if min(indir) < 0 or max(indir) > 255:
            raise ValueError("indirection table entries must be queue numbers 0..255")
        self.toeplitz = Toeplitz(key)
        if self.toeplitz.max_len < 12:
            raise ValueError(f"the RSS key must be at least 16 bytes to hash IPv4 4-tuples (got {len(key)})")
        self.key = bytes(key)
        self.indir = np.asarray(indir, dtype=np.uint8)
        self.udp4_l4 = udp4_hash == "sdfn"
        self.tcp4_l4 = tcp4_hash == "sdfn"

    @classmethod
    def from_ethtool(cls, et: dict) -> "Rss":
        """From the resolved [ethtool] table (rss_key hex 'aa:bb:..', rss_indir filled in)."""
        return cls(bytes.fromhex(et["rss_key"].replace(":", "")), list(et["rss_indir"]),
                   et["udp4_hash"], et["tcp4_hash"])

    def l4_hashed(self, proto: np.ndarray) -> np.ndarray:
        """Whether the ports are part of the hash for these IP protocols (bool array)."""
        proto = np.asarray(proto)
        return ((proto == IPPROTO_UDP) & self.udp4_l4) | ((proto == IPPROTO_TCP) & self.tcp4_l4)

    def hash_tuples(self, src_ip, dst_ip, src_port, dst_port, l4) -> np.ndarray:
        """Hash IPv4 tuples given as host-order integer arrays; ports count only where l4.

        Rows without ports hash the 8-byte 2-tuple: the 12-byte input with zero ports gives
        the same value, as trailing zero bytes add nothing.
        """
        src_ip = np.asarray(src_ip, dtype=np.uint32)
        n = src_ip.shape[0]
        buf = np.zeros((n, 12), dtype=np.uint8)
        buf[:, 0:4] = src_ip.astype(">u4").view(np.uint8).reshape(n, 4)
        buf[:, 4:8] = np.asarray(dst_ip, dtype=np.uint32).astype(">u4").view(np.uint8).reshape(n, 4)
        ports = np.zeros((n, 2), dtype=">u2")
        ports[:, 0] = src_port
        ports[:, 1] = dst_port
        ports[~np.asarray(l4, dtype=bool)] = 0
        buf[:, 8:12] = ports.view(np.uint8).reshape(n, 4)
        return self.toeplitz.hash_batch(buf)

    def hash_heads(self, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parse Ethernet/IPv4/L4 headers of uint8 [n, >=78] rows; (hash uint32, l4 uint8).

        Deviation: any IPv4 fragment (MF set or offset non-zero, the first fragment included)
        is hashed on the 2-tuple, as Intel and mlx5 hardware do, so that all fragments of a
        datagram land on one queue; the sources never emit fragments (DF is set).
        """
        heads = np.asarray(heads, dtype=np.uint8)
        n = heads.shape[0]
        h = np.zeros(n, dtype=np.uint32)
        l4 = np.zeros(n, dtype=np.uint8)
        ethertype = (heads[:, 12].astype(np.uint16) << 8) | heads[:, 13]
        ihl = heads[:, ETH_HLEN] & 0x0F
        ip = (ethertype == ETH_P_IP) & ((heads[:, ETH_HLEN] >> 4) == 4) & (ihl >= 5)
        rows = np.nonzero(ip)[0]
        if rows.size == 0:
            return h, l4
        hd = heads[rows]
        proto = hd[:, ETH_HLEN + 9]
        frag = ((hd[:, ETH_HLEN + 6].astype(np.uint16) & 0x3F) << 8) | hd[:, ETH_HLEN + 7]
        use_l4 = self.l4_hashed(proto) & (frag == 0)
        src = hd[:, ETH_HLEN + 12:ETH_HLEN + 16].copy().view(">u4").ravel()
        dst = hd[:, ETH_HLEN + 16:ETH_HLEN + 20].copy().view(">u4").ravel()
        off = ETH_HLEN + ihl[rows].astype(np.intp) * 4
        r = np.arange(rows.size)
        sport = (hd[r, off].astype(np.uint16) << 8) | hd[r, off + 1]
        dport = (hd[r, off + 2].astype(np.uint16) << 8) | hd[r, off + 3]
        h[rows] = self.hash_tuples(src, dst, sport, dport, use_l4)
        l4[rows] = use_l4
        return h, l4

    def queue_of(self, hash: np.ndarray) -> np.ndarray:
        """indir[hash & (size - 1)]: the RX queue of each hash (uint8)."""
        return self.indir[np.asarray(hash, dtype=np.uint32) & np.uint32(len(self.indir) - 1)]
