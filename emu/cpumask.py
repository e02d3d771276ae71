"""CPU masks in the kernel's bitmap formats (lib/vsprintf.c bitmap_string, bitmap_list_string).

Mask files (rps_cpus, smp_affinity, flow_limit_cpu_bitmap) are lower-case hex, most
significant 32-bit chunk first, chunks separated by ',', the first chunk as wide as the
bits left over need, later chunks 8 digits. List files (smp_affinity_list) are ranges.
"""


def parse_mask(text: str) -> int:
    """Parse a hex mask as the kernel accepts it on write ("e", "ff,ffffffff", "0x3")."""
    s = str(text).strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    s = s.replace(",", "")
    if not s or any(c not in "0123456789abcdef" for c in s):
        raise ValueError(f"{text!r} is not a hex CPU mask (e.g. 'f' or 'ff,ffffffff')")
    return int(s, 16)


def format_mask(mask: int, nr_cpu_ids: int) -> str:
    """Render a mask as /proc/irq/N/smp_affinity does for nr_cpu_ids bits."""
    nbits = max(nr_cpu_ids, 1)
    chunks = []
    remaining = nbits
    m = mask
    while remaining > 0:
        width = 32 if remaining >= 32 else remaining
        chunks.append((m & ((1 << width) - 1), width))
        m >>= width
        remaining -= width
    # chunks is least significant first; the most significant chunk may be partial
    out = []
    for i, (value, width) in enumerate(reversed(chunks)):
        digits = (width + 3) // 4 if i == 0 else 8
        out.append(f"{value:0{digits}x}")
    return ",".join(out)


def parse_list(text: str, nbits: int) -> int:
    """Parse a CPU list ("0-3,8") into a mask of CPUs below nbits (nr_cpu_ids)."""
    mask = 0
    s = str(text).strip()
    if not s:
        return 0
    for part in s.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            lo, hi = int(lo), int(hi if hi else lo)
            if lo > hi or lo < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{text!r} is not a CPU list (e.g. '0-3,8')") from None
        if hi >= nbits:
            # bitmap_parselist refuses a CPU past the mask's size: ERANGE
            raise ValueError(f"{text!r} names CPU {hi}, but the host has CPUs 0-{nbits - 1}")
        mask |= ((1 << (hi - lo + 1)) - 1) << lo
    return mask


def format_list(mask: int) -> str:
    """Render a mask as smp_affinity_list does: ascending ranges joined by ','."""
    cpus = cpus_of(mask)
    out = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def cpus_of(mask: int) -> list[int]:
    """The CPU numbers set in a mask, ascending."""
    out = []
    c = 0
    while mask:
        if mask & 1:
            out.append(c)
        mask >>= 1
        c += 1
    return out
