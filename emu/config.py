"""One frozen config tree, resolved once: embedded defaults < TOML file < --set / flags.

Keys are dotted paths that keep the kernel's names: ``net.core.netdev_budget`` is
/proc/sys/net/core/netdev_budget, ``sys.class.net.eth0.queues.rx-0.rps_cpus`` is the sysfs
file, ``proc.irq.121.smp_affinity`` is /proc/irq/121/smp_affinity. Arrays of tables
(``traffic.sources``, ``udp.sockets``) are indexed by number (``traffic.sources.0.rate_pps``);
a file that gives such an array replaces the default one whole.

Everything is validated before anything starts; a problem raises ConfigError with one line
that names the key and what is allowed. The resolved tree has every derived value filled in
(netdev_budget_usecs, the RSS key and indirection table, one smp_affinity per vector, one
rps_cpus per queue) so children never compute defaults of their own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from importlib import resources
from typing import Any

from .affinity import effective_cpus
from .placement import PLACEMENTS
from .cpumask import format_list, format_mask, parse_list, parse_mask
from .errors import ConfigError

MAX_CPUS = 64
MAX_QUEUES = 64
MAX_COST_NS = 1_000_000_000   # one emulated second per item of work: beyond it, a typo
MAX_SOURCE_MS = 1e9           # source times (about 11.6 emulated days) stay in int64 ns
MAX_WALL_S = 86_400       # a day: longer is a typo, not a run
MAX_EMULATED_S = 3600     # an emulated hour of packets: longer is a typo, not a run
_TIME_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
RSS_INDIR_SIZE = 128
NETDEV_RSS_KEY_LEN = 52

_SOURCE_DEFAULTS: dict[str, Any] = {
    "name": "",
    "pattern": "constant",
    "proto": "udp",
    "rate_pps": 100000.0,
    "flows": 1,
    "dst_ports": [9000],
    "frame_len": 128,
    "queue": -1,
    "start_ms": 0.0,
    "stop_ms": -1.0,
    "on_ms": 0.0,
    "off_ms": 0.0,
    "src_net": "10.0.0.0",
    "dst_ip": "192.168.0.1",
    "weights": [],
}
_SOCKET_DEFAULTS: dict[str, Any] = {
    "port": 9000,
    "reader_cpu": -1,     # -1: the socket's index modulo run.cpus
    "rcvbuf": 0,          # 0: net.core.rmem_default
    "connect": "",        # "ip:port": a connected socket (RFS records its flow on each read)
}
_QUEUE_DEFAULTS: dict[str, Any] = {"rps_cpus": "0", "rps_flow_cnt": 0}
# Real knobs the emulator does not model, and why (a knob accepted and then ignored would
# mislead whoever tunes it).
_UNMODELLED = {
    "net.core.gro_normal_batch": "not modelled: a NAPI poll sends its skbs up the stack as "
    "one list (as if gro_normal_batch were at least the NAPI weight); see docs/design.md",
}


def _refuse_unmodelled(key: str) -> None:
    why = _UNMODELLED.get(key)
    if why:
        raise ConfigError(f"{key}: {why}")
_IRQ_KEYS = ("smp_affinity", "smp_affinity_list")
_PATTERNS = ("constant", "poisson", "onoff")
_PROTOS = ("udp", "tcp")
_HASH_FIELDS = ("sd", "sdfn")


def default_text() -> str:
    """The embedded default config, as shipped."""
    return resources.files("emu").joinpath("defaults.toml").read_text()


def _defaults() -> dict:
    return tomllib.loads(default_text())


class Config:
    """A resolved, validated, read-only config tree.

    ``effective_cpu[q]``: the one CPU RX queue q's vector is delivered to (the x86 vector
    matrix's choice among its smp_affinity, emu.affinity), computed once here so the NIC,
    the orchestrator and the renderers agree.
    """

    __slots__ = ("_tree", "effective_cpu")

    def __init__(self, tree: dict):
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "effective_cpu", tuple(effective_cpus(
            [self.irq_affinity(q) for q in range(self.nqueues)], (1 << self.ncpus) - 1)))

    def __setattr__(self, name, value):
        raise AttributeError("Config is frozen; changes go through resolve()")

    def __getitem__(self, key: str) -> Any:
        node: Any = self._tree
        for part in key.split("."):
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node[part]
        return copy.deepcopy(node) if isinstance(node, (dict, list)) else node

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, IndexError, ValueError):
            return default

    def to_dict(self) -> dict:
        """A deep copy of the tree: what children receive at spawn."""
        return copy.deepcopy(self._tree)

    # Shortcuts for values many modules need.
    @property
    def ncpus(self) -> int:
        return self._tree["run"]["cpus"]

    @property
    def nqueues(self) -> int:
        return self._tree["ethtool"]["rx_queues"]

    @property
    def duration_ns(self) -> int:
        """Emulated ns of traffic (run.duration)."""
        return parse_time("run.duration", self._tree["run"]["duration"])

    @property
    def drain_ns(self) -> int:
        """Emulated ns after traffic for the queues to drain (run.drain)."""
        return parse_time("run.drain", self._tree["run"]["drain"])

    def queue(self, q: int) -> dict:
        return self["sys.class.net.eth0.queues"][f"rx-{q}"]

    def irq_of_queue(self, q: int) -> int:
        return self._tree["irq"]["base"] + q

    def irq_affinity(self, q: int) -> int:
        return parse_mask(self._tree["proc"]["irq"][str(self.irq_of_queue(q))]["smp_affinity"])

    def rps_mask(self, q: int) -> int:
        return parse_mask(self.queue(q)["rps_cpus"])

    def rss_key(self) -> bytes:
        return bytes.fromhex(self._tree["ethtool"]["rss_key"].replace(":", ""))

    def to_toml(self) -> str:
        return dumps_toml(self._tree)


# ----------------------------------------------------------------------------------------
# parsing of --set values


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split KEY=VALUE; VALUE is read as a TOML value if it is one, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. net.core.netdev_budget=600")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, _RawText(raw, value)


class _RawText:
    """A --set value that remembers its text, so 'rps_cpus=10' stays the mask '10'."""

    __slots__ = ("text", "value")

    def __init__(self, text: str, value: Any):
        self.text = text
        self.value = value


# ----------------------------------------------------------------------------------------
# resolution


def resolve(file_text: str | None = None, sets: list[str] | tuple = (),
            flags: dict[str, Any] | None = None, file_name: str = "config") -> Config:
    """Resolve defaults < file < --set < flags into a validated Config.

    ``flags`` maps dotted keys to values from dedicated CLI options (--cpus ...); they win
    over --set because they are the more specific spelling of the same request.
    """
    tree = _defaults()
    if file_text is not None:
        try:
            user = tomllib.loads(file_text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file_name}: not valid TOML: {e}") from None
        _merge(tree, user, "")
    for s in sets:
        key, raw = parse_assignment(s)
        _assign(tree, key, raw)
    for key, value in (flags or {}).items():
        if value is not None:
            _assign(tree, key, value)
    _materialise_dynamic(tree)
    _validate(tree)
    _derive(tree)
    return Config(tree)


def _merge(base: dict, user: dict, prefix: str) -> None:
    for k, v in user.items():
        path = f"{prefix}{k}"
        if path in ("traffic.sources", "udp.sockets"):
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
            base[k] = [dict(x) for x in v]
            continue
        if path in ("sys.class.net.eth0.queues", "proc.irq"):
            if not isinstance(v, dict):
                raise ConfigError(f"{path}: expected a table")
            base.setdefault(k, {})
            for sub, val in v.items():
                if not isinstance(val, dict):
                    raise ConfigError(f"{path}.{sub}: expected a table")
                base[k].setdefault(sub, {}).update(val)
            continue
        if path in ("proc", "sys", "sys.class", "sys.class.net") and isinstance(v, dict):
            base.setdefault(k, {})
            _merge(base[k], v, path + ".")
            continue
        if k not in base:
            _refuse_unmodelled(path)
            raise ConfigError(f"unknown config key '{path}'{_known(base, prefix)}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"{path}: expected a table, got {_show(v)}")
            _merge(base[k], v, path + ".")
        else:
            base[k] = v


def _known(node: dict, prefix: str) -> str:
    names = sorted(k for k in node if not isinstance(node[k], dict))
    where = prefix.rstrip(".") or "the top level"
    return f" (keys in {where}: {', '.join(names)})" if names else ""


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else json.dumps(v, default=str)


def _materialise_dynamic(tree: dict) -> None:
    """Give every queue and vector its table so --set can address them."""
    try:
        nq = int(tree["ethtool"]["rx_queues"])
        base = int(tree["irq"]["base"])
        ncpus = int(tree["run"]["cpus"])
    except (TypeError, ValueError):
        return  # _validate reports the bad scalar with its key
    if not (1 <= nq <= MAX_QUEUES and 1 <= ncpus <= MAX_CPUS and 0 <= base < 2**31):
        return  # out of range: _validate says so before anything uses them
    eth0 = tree.setdefault("sys", {}).setdefault("class", {}).setdefault("net", {}).setdefault("eth0", {})
    queues = eth0.setdefault("queues", {})
    for name in list(queues):
        if not name.startswith("rx-") or not name[3:].isdigit() or int(name[3:]) >= nq:
            raise ConfigError(
                f"sys.class.net.eth0.queues.{name}: no such queue (eth0 has rx-0..rx-{nq - 1})")
    for q in range(nq):
        qt = queues.setdefault(f"rx-{q}", {})
        for k, v in _QUEUE_DEFAULTS.items():
            qt.setdefault(k, v)
    irqs = tree.setdefault("proc", {}).setdefault("irq", {})
    valid = {str(base + q) for q in range(nq)}
    for name in list(irqs):
        if name not in valid:
            raise ConfigError(
                f"proc.irq.{name}: no such IRQ (eth0's RX vectors are {base}..{base + nq - 1})")
    for q in range(nq):
        it = irqs.setdefault(str(base + q), {})
        if "smp_affinity" not in it and "smp_affinity_list" not in it:
            it["smp_affinity"] = format_mask(1 << (q % max(ncpus, 1)), max(ncpus, 1))


def _assign(tree: dict, key: str, raw: Any) -> None:
    _refuse_unmodelled(key)
    parts = key.split(".")
    # sysfs/procfs names contain no dots except as separators, so the path is exact.
    node: Any = tree
    dynamic = (len(parts) == 7 and parts[:5] == ["sys", "class", "net", "eth0", "queues"]) or \
        (len(parts) == 4 and parts[:2] == ["proc", "irq"])
    if dynamic:  # a queue's or vector's table exists once named; _materialise_dynamic checks it
        tree.setdefault("proc", {}).setdefault("irq", {})
        tree["sys"]["class"]["net"]["eth0"].setdefault("queues", {})
        parent = _lookup(tree, ".".join(parts[:-2]))
        table = parent.setdefault(parts[-2], {})
        if parts[0] != "proc":      # a queue named by a file with some keys has the others too
            for k, v in _QUEUE_DEFAULTS.items():
                table.setdefault(k, v)
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"unknown config key '{key}': {'.'.join(parts[:i])} has indices "
                                  f"0..{len(node) - 1}")
            node = node[int(part)]
        elif isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
            node = node[part]
        else:
            raise ConfigError(f"unknown config key '{key}'")
    last = parts[-1]
    if isinstance(node, list):
        raise ConfigError(f"unknown config key '{key}': set a field of one element, e.g. {key}.0.<field>")
    prefix = ".".join(parts[:-1])
    in_irq = len(parts) == 4 and parts[:2] == ["proc", "irq"]
    if in_irq and last in _IRQ_KEYS:
        node.pop("smp_affinity", None)
        node.pop("smp_affinity_list", None)
        node[last] = _text_of(raw)
        return
    template = _item_template(prefix)
    known = node if template is None else {**node, **template}
    if last not in known or isinstance(known[last], dict):
        raise ConfigError(f"unknown config key '{key}'{_known(known, prefix + '.')}")
    node[last] = _coerce(key, known[last], raw)


def _item_template(prefix: str) -> dict | None:
    parts = prefix.split(".")
    if len(parts) == 3 and parts[:2] == ["traffic", "sources"]:
        return _SOURCE_DEFAULTS
    if len(parts) == 3 and parts[:2] == ["udp", "sockets"]:
        return _SOCKET_DEFAULTS
    return None


def _text_of(raw: Any) -> str:
    return raw.text if isinstance(raw, _RawText) else str(raw)


def _coerce(key: str, like: Any, raw: Any) -> Any:
    """Bring a --set value to the type the key holds; refuse what cannot be."""
    value = raw.value if isinstance(raw, _RawText) else raw
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("on", "off", "yes", "no", "true", "false"):
            return value.lower() in ("on", "yes", "true")
        raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
    if isinstance(like, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {_show(_text_of(raw))}")
    if isinstance(like, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {_show(_text_of(raw))}")
    if isinstance(like, str):
        return _text_of(raw)
    if isinstance(like, list):
        if isinstance(value, list):
            return value
        raise ConfigError(f"{key}: expected a list like [1, 2], got {_show(_text_of(raw))}")
    return value


# ----------------------------------------------------------------------------------------
# validation


def parse_time(key: str, value: Any) -> int:
    """Emulated time with a unit ("200ms", "2s", "150us", "500ns") in integer ns."""
    units = ", ".join(_TIME_UNITS)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{key} is emulated time and needs a unit ({units}), e.g. \"50ms\" "
                          f"or \"2s\"; got the bare number {value:g} (before this version it "
                          f"meant wall-clock seconds)")
    text = str(value).strip()
    num = text.rstrip("abcdefghijklmnopqrstuvwxyzµ")
    unit = text[len(num):].strip()
    num = num.strip()
    if not unit and num:
        raise ConfigError(f"{key} is emulated time and needs a unit ({units}), e.g. \"50ms\" "
                          f"or \"2s\"; got the bare number {num} (before this version it meant "
                          f"wall-clock seconds)")
    if not num:
        raise ConfigError(f"{key}: expected emulated time with a unit ({units}), e.g. \"50ms\" "
                          f"or \"2s\"; got {text!r}")
    if unit not in _TIME_UNITS:
        raise ConfigError(f"{key}: unknown time unit {unit!r} in {text!r}; use one of {units}")
    try:
        x = float(num)
    except ValueError:
        raise ConfigError(f"{key}: expected a time like \"50ms\", got {text!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"{key}: expected a time >= 0 like \"50ms\", got {text!r}")
    ns = round(x * _TIME_UNITS[unit])
    if ns > MAX_EMULATED_S * 1_000_000_000:
        raise ConfigError(f"{key} must be at most {MAX_EMULATED_S} s of emulated time (got {text})")
    return ns


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value}")
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
    if not isinstance(value, kind):
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list"}
        raise ConfigError(f"{key}: expected {names[kind]}, got {_show(value)}")
    return value


def _check_types(node: dict, like: dict, prefix: str) -> None:
    for k, v in like.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) or k not in node:
            continue
        node[k] = _typed(key, node[k], type(v))


def _int_range(tree: dict, key: str, lo: int, hi: int | None = None, extra: str = "") -> int:
    v = _lookup(tree, key)
    v = _typed(key, v, int)
    ok = v >= lo and (hi is None or v <= hi)
    allowed = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    _need(ok, f"{key} must be {allowed}{extra} (got {v})")
    return v


def _lookup(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _validate(tree: dict) -> None:
    d = _defaults()
    for k in ("duration", "drain"):
        parse_time(f"run.{k}", tree["run"][k])       # a bare number: the message says why
    for section in ("run", "ethtool", "irq", "cost", "sched"):
        _check_types(tree[section], d[section], section + ".")
    _check_types(tree["net"]["core"], d["net"]["core"], "net.core.")
    eth0 = tree["sys"]["class"]["net"]["eth0"]
    _check_types(eth0, d["sys"]["class"]["net"]["eth0"], "sys.class.net.eth0.")

    ncpus = _int_range(tree, "run.cpus", 1, MAX_CPUS)
    run = tree["run"]
    _need(run["tdf"] == 0 or 1 <= run["tdf"] <= 1e6, f"run.tdf must be 0 (as fast as the host "
          f"allows) or between 1 and 1e6 (emulated time at most wall time / tdf; it cannot run "
          f"faster than real time) (got {run['tdf']:g})")
    _need(parse_time("run.duration", run["duration"]) > 0,
          f"run.duration must be more than 0 (got {run['duration']})")
    parse_time("run.drain", run["drain"])
    _need(0.05 <= run["refresh"] <= MAX_WALL_S, f"run.refresh must be between 0.05 and "
          f"{MAX_WALL_S} seconds (got {run['refresh']:g})")
    _need(run["hz"] in (100, 250, 300, 1000), f"run.hz must be one of 100, 250, 300, 1000 (got {run['hz']})")
    _need(run["placement"] in PLACEMENTS, f"run.placement must be one of "
          f"{', '.join(PLACEMENTS)} (got {run['placement']!r})")

    _int_range(tree, "net.core.netdev_budget", 1, 2**31 - 1)
    min_usecs = 2 * 1_000_000 // run["hz"]
    usecs = _typed("net.core.netdev_budget_usecs", tree["net"]["core"]["netdev_budget_usecs"], int)
    _need(usecs == 0 or usecs >= min_usecs,
          f"net.core.netdev_budget_usecs must be 0 (the default) or >= {min_usecs} "
          f"(2 jiffies at HZ={run['hz']}) (got {usecs})")
    _int_range(tree, "net.core.dev_weight", 1, 2**31 - 1)
    _int_range(tree, "net.core.dev_weight_rx_bias", 1, 2**31 - 1)
    _int_range(tree, "net.core.netdev_max_backlog", 1, 2**31 - 1)
    _int_range(tree, "net.core.rmem_default", 2304, 2**31 - 1)
    _int_range(tree, "net.core.rps_sock_flow_entries", 0, 1 << 29)  # rounded up to 2^n
    ftl = _int_range(tree, "net.core.flow_limit_table_len", 1, 1 << 30)
    _need(_is_pow2(ftl), f"net.core.flow_limit_table_len must be a power of two (got {ftl})")
    _cpu_mask(tree, "net.core.flow_limit_cpu_bitmap", tree["net"]["core"]["flow_limit_cpu_bitmap"],
              ncpus, allow_empty=True)

    _int_range(tree, "sys.class.net.eth0.napi_weight", 1, 64, " (drivers warn above NAPI_POLL_WEIGHT 64)")

    _int_range(tree, "ethtool.speed", 10, 800_000, " Mb/s")
    nq = _int_range(tree, "ethtool.rx_queues", 1, MAX_QUEUES)
    ring = _int_range(tree, "ethtool.rx_ring", 64, 8192)
    _need(_is_pow2(ring), f"ethtool.rx_ring must be a power of two between 64 and 8192 (got {ring})")
    us = _int_range(tree, "ethtool.rx_usecs", 0, 10_000)
    fr = _int_range(tree, "ethtool.rx_frames", 0, 65_535)
    _need(us > 0 or fr > 0, "ethtool.rx_usecs and ethtool.rx_frames cannot both be 0 "
          "(no coalescing is rx_usecs=0 rx_frames=1)")
    et = tree["ethtool"]
    for k in ("udp4_hash", "tcp4_hash"):
        _need(et[k] in _HASH_FIELDS, f"ethtool.{k} must be 'sd' (IP addresses) or 'sdfn' "
              f"(addresses and ports) (got {et[k]!r})")
    if et["rss_key"]:
        try:
            key = bytes.fromhex(et["rss_key"].replace(":", ""))
        except ValueError:
            raise ConfigError(f"ethtool.rss_key must be hex bytes like '6d:5a:56:...' (got {et['rss_key']!r})") from None
        _need(len(key) >= 40, f"ethtool.rss_key must be at least 40 bytes to hash IPv4 and IPv6 "
              f"4-tuples (got {len(key)})")
    indir = et["rss_indir"]
    if indir:
        _need(len(indir) == RSS_INDIR_SIZE and all(isinstance(x, int) and not isinstance(x, bool) for x in indir),
              f"ethtool.rss_indir must list exactly {RSS_INDIR_SIZE} queue numbers (got {len(indir)} entries)")
        bad = [x for x in indir if not 0 <= x < nq]
        _need(not bad, f"ethtool.rss_indir names queue {bad[0] if bad else 0}, but eth0 has rx-0..rx-{nq - 1}")
    _int_range(tree, "irq.base", 16, 4000)

    for k in tree["cost"]:
        lo = 1 if k.startswith("lat_") else 0          # the lookahead must be > 0
        _int_range(tree, f"cost.{k}", lo, MAX_COST_NS, " emulated ns")
    cost = tree["cost"]
    _need(cost["lat_ipi"] >= cost["lat_cacheline"],
          f"cost.lat_ipi must be at least cost.lat_cacheline ({cost['lat_cacheline']}): the "
          f"data an IPI announces is seen before the IPI (got {cost['lat_ipi']})")
    for k in ("ksoftirqd_nice", "user_nice"):
        _int_range(tree, f"sched.{k}", -20, 19)
    for k in ("sched_latency_ns", "min_granularity_ns", "wakeup_granularity_ns"):
        _int_range(tree, f"sched.{k}", 1, 10 * MAX_COST_NS)
    _int_range(tree, "sched.recv_batch", 1, 65536)
    _int_range(tree, "run.seed", 0, 2**63 - 1)

    for q in range(nq):
        qkey = f"sys.class.net.eth0.queues.rx-{q}"
        qt = eth0["queues"][f"rx-{q}"]
        for k in qt:
            _need(k in _QUEUE_DEFAULTS, f"unknown config key '{qkey}.{k}' (keys in {qkey}: rps_cpus, rps_flow_cnt)")
        qt["rps_cpus"] = _typed(f"{qkey}.rps_cpus", _maskish(qt["rps_cpus"]), str)
        _cpu_mask(tree, f"{qkey}.rps_cpus", qt["rps_cpus"], ncpus, allow_empty=True)
        _int_range(tree, f"{qkey}.rps_flow_cnt", 0, 1 << 29)
        irq = str(tree["irq"]["base"] + q)
        it = tree["proc"]["irq"][irq]
        ikey = f"proc.irq.{irq}"
        for k in it:
            _need(k in _IRQ_KEYS, f"unknown config key '{ikey}.{k}' (keys in {ikey}: smp_affinity, smp_affinity_list)")
        if "smp_affinity_list" in it:
            try:
                mask = parse_list(it["smp_affinity_list"], ncpus)
            except ValueError as e:
                raise ConfigError(f"{ikey}.smp_affinity_list: {e}") from None
            _mask_in_range(f"{ikey}.smp_affinity_list", it["smp_affinity_list"], mask, ncpus)
            _need(mask != 0, f"{ikey}.smp_affinity_list must name at least one CPU of 0-{ncpus - 1}")
        else:
            mask = _cpu_mask(tree, f"{ikey}.smp_affinity", _maskish(it["smp_affinity"]), ncpus, allow_empty=False)

    _validate_sources(tree, nq, tree["ethtool"]["speed"])
    _validate_sockets(tree, ncpus)


def _maskish(v: Any) -> Any:
    # A mask written in TOML as a bare number (rps_cpus = 2) means the hex digits "2".
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _cpu_mask(tree: dict, key: str, text: Any, ncpus: int, allow_empty: bool) -> int:
    text = _maskish(text)
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a hex CPU mask like 'f', got {_show(text)}")
    try:
        mask = parse_mask(text)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    _mask_in_range(key, text, mask, ncpus)
    if not allow_empty:
        _need(mask != 0, f"{key} must name at least one CPU of 0-{ncpus - 1} (got {text!r})")
    return mask


def _mask_in_range(key: str, text: str, mask: int, ncpus: int) -> None:
    high = mask >> ncpus
    if high:
        first = ncpus + (high & -high).bit_length() - 1
        raise ConfigError(f"{key} = {text!r} names CPU {first}, but the host has CPUs "
                          f"0-{ncpus - 1}")


# Bytes a frame occupies on the wire beyond its length here (which has no FCS): the FCS,
# the preamble and start delimiter, and the minimum inter-frame gap.
WIRE_OVERHEAD = 4 + 8 + 12


def max_pps(speed_mbps: int, frame_len: int) -> float:
    """Frames per second a link of speed_mbps carries back to back at this frame length."""
    return speed_mbps * 1e6 / ((frame_len + WIRE_OVERHEAD) * 8)


def _validate_sources(tree: dict, nq: int, speed: int) -> None:
    sources = tree.get("traffic", {}).get("sources", [])
    _need(isinstance(sources, list) and len(sources) > 0,
          "traffic.sources must list at least one source ([[traffic.sources]])")
    _need(len(sources) <= 16, f"traffic.sources may list at most 16 sources (got {len(sources)})")
    names = set()
    for i, src in enumerate(sources):
        p = f"traffic.sources.{i}"
        for k in src:
            _need(k in _SOURCE_DEFAULTS, f"unknown config key '{p}.{k}' (keys: {', '.join(_SOURCE_DEFAULTS)})")
        for k, v in _SOURCE_DEFAULTS.items():
            src.setdefault(k, copy.deepcopy(v))
            src[k] = _typed(f"{p}.{k}", src[k], type(v))
        if not src["name"]:
            src["name"] = f"source{i}"
        _need(src["name"] not in names, f"{p}.name {src['name']!r} is used twice; names must be unique")
        names.add(src["name"])
        _need(src["pattern"] in _PATTERNS, f"{p}.pattern must be one of {', '.join(_PATTERNS)} (got {src['pattern']!r})")
        _need(src["proto"] in _PROTOS, f"{p}.proto must be one of {', '.join(_PROTOS)} (got {src['proto']!r})")
        _need(src["rate_pps"] >= 0, f"{p}.rate_pps must be >= 0 (got {src['rate_pps']})")
        _need(1 <= src["flows"] <= 65536, f"{p}.flows must be between 1 and 65536 (got {src['flows']})")
        ports = src["dst_ports"]
        _need(len(ports) > 0 and all(isinstance(x, int) and 0 < x < 65536 for x in ports),
              f"{p}.dst_ports must list ports between 1 and 65535 (got {ports})")
        minlen = 14 + 20 + (8 if src["proto"] == "udp" else 20)
        _need(max(60, minlen) <= src["frame_len"] <= 9014,
              f"{p}.frame_len must be between {max(60, minlen)} and 9014 bytes (got {src['frame_len']})")
        top = max_pps(speed, src["frame_len"])
        _need(src["rate_pps"] <= top,
              f"{p}.rate_pps must be at most {top:,.0f}: a {speed} Mb/s link (ethtool.speed) "
              f"carries no more {src['frame_len']}-byte frames per second (got {src['rate_pps']:g})")
        _need(-1 <= src["queue"] < nq, f"{p}.queue must be -1 (any) or a queue 0..{nq - 1} (got {src['queue']})")
        for k in ("start_ms", "on_ms", "off_ms"):
            _need(0 <= src[k] <= MAX_SOURCE_MS, f"{p}.{k} must be between 0 and {MAX_SOURCE_MS:g} "
                  f"emulated ms (got {src[k]:g})")
        _need(src["stop_ms"] <= MAX_SOURCE_MS, f"{p}.stop_ms must be -1 (never) or at most "
              f"{MAX_SOURCE_MS:g} emulated ms (got {src['stop_ms']:g})")
        _need(src["stop_ms"] == -1 or src["stop_ms"] > src["start_ms"],
              f"{p}.stop_ms must be -1 (never) or after start_ms (got {src['stop_ms']})")
        if src["pattern"] == "onoff":
            _need(src["on_ms"] > 0 and src["off_ms"] >= 0,
                  f"{p}: pattern 'onoff' needs on_ms > 0 and off_ms >= 0")
        w = src["weights"]
        _need(not w or (len(w) == src["flows"] and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        and math.isfinite(x) and 0 <= x <= 1e12 for x in w)
                        and sum(w) > 0),
              f"{p}.weights must be empty or give one weight per flow ({src['flows']}), "
              f"each between 0 and 1e12, not all 0")
        for k in ("src_net", "dst_ip"):
            _need(_is_ipv4(src[k]), f"{p}.{k} must be a dotted IPv4 address (got {src[k]!r})")


def _validate_sockets(tree: dict, ncpus: int) -> None:
    socks = tree.get("udp", {}).get("sockets", [])
    _need(isinstance(socks, list), "udp.sockets must be an array of tables ([[udp.sockets]])")
    _need(len(socks) <= 64, f"udp.sockets may list at most 64 sockets (got {len(socks)})")
    ports = set()
    for i, s in enumerate(socks):
        p = f"udp.sockets.{i}"
        for k in s:
            _need(k in _SOCKET_DEFAULTS, f"unknown config key '{p}.{k}' (keys: {', '.join(_SOCKET_DEFAULTS)})")
        for k, v in _SOCKET_DEFAULTS.items():
            s.setdefault(k, v)
            s[k] = _typed(f"{p}.{k}", s[k], type(v))
        _need(0 < s["port"] < 65536, f"{p}.port must be between 1 and 65535 (got {s['port']})")
        _need(s["port"] not in ports, f"{p}.port {s['port']} is bound twice (no SO_REUSEPORT here)")
        ports.add(s["port"])
        _need(-1 <= s["reader_cpu"] < ncpus, f"{p}.reader_cpu names CPU {s['reader_cpu']}, "
              f"but the host has CPUs 0-{ncpus - 1} (-1: the socket's index modulo run.cpus)")
        _need(s["rcvbuf"] == 0 or 2304 <= s["rcvbuf"] <= 2**31 - 1,
              f"{p}.rcvbuf must be 0 (rmem_default) or between 2304 and {2**31 - 1} (got {s['rcvbuf']})")
        if s["connect"]:
            ip, _, port = s["connect"].rpartition(":")
            _need(_is_ipv4(ip) and port.isdigit() and 0 < int(port) < 65536,
                  f"{p}.connect must be 'ip:port' of the peer (got {s['connect']!r})")


def _is_ipv4(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(x.isdigit() and 0 <= int(x) <= 255 for x in parts)


# ----------------------------------------------------------------------------------------
# derived values


def _derive(tree: dict) -> None:
    core = tree["net"]["core"]
    hz = tree["run"]["hz"]
    if core["netdev_budget_usecs"] == 0:
        core["netdev_budget_usecs"] = 2 * 1_000_000 // hz
    ncpus = tree["run"]["cpus"]
    core["flow_limit_cpu_bitmap"] = format_mask(parse_mask(_maskish(core["flow_limit_cpu_bitmap"])), ncpus)
    if core["rps_sock_flow_entries"]:
        core["rps_sock_flow_entries"] = _roundup_pow2(core["rps_sock_flow_entries"])
    et = tree["ethtool"]
    if not et["rss_key"]:
        seed = str(tree["run"]["seed"]).encode()
        key = hashlib.sha256(b"netdev_rss_key" + seed).digest() + hashlib.sha256(b"more" + seed).digest()
        et["rss_key"] = ":".join(f"{b:02x}" for b in key[:NETDEV_RSS_KEY_LEN])
    else:
        et["rss_key"] = ":".join(f"{b:02x}" for b in bytes.fromhex(et["rss_key"].replace(":", "")))
    if not et["rss_indir"]:
        et["rss_indir"] = [i % et["rx_queues"] for i in range(RSS_INDIR_SIZE)]
    for q in range(et["rx_queues"]):
        qt = tree["sys"]["class"]["net"]["eth0"]["queues"][f"rx-{q}"]
        qt["rps_cpus"] = format_mask(parse_mask(qt["rps_cpus"]), ncpus)
        if qt["rps_flow_cnt"]:
            qt["rps_flow_cnt"] = _roundup_pow2(qt["rps_flow_cnt"])
        it = tree["proc"]["irq"][str(tree["irq"]["base"] + q)]
        mask = parse_list(it["smp_affinity_list"], ncpus) if "smp_affinity_list" in it else parse_mask(_maskish(it["smp_affinity"]))
        it.clear()
        it["smp_affinity"] = format_mask(mask, ncpus)
        it["smp_affinity_list"] = format_list(mask)
    for i, s in enumerate(tree.get("udp", {}).get("sockets", [])):
        if s["reader_cpu"] < 0:
            s["reader_cpu"] = i % ncpus
        if s["rcvbuf"] == 0:
            s["rcvbuf"] = core["rmem_default"]


def _roundup_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


# ----------------------------------------------------------------------------------------
# writing the resolved tree


def dumps_toml(tree: dict) -> str:
    """A small TOML writer for the resolved tree (tomllib only reads)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(type(v))

    def key(k: str) -> str:
        return k if all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)

    def table(node: dict, path: list[str]) -> None:
        scalars = {k: v for k, v in node.items()
                   if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        if scalars and path:
            lines.append(f"[{'.'.join(key(p) for p in path)}]")
        for k, v in scalars.items():
            lines.append(f"{key(k)} = {scalar(v)}")
        if scalars:
            lines.append("")
        for k, v in node.items():
            if isinstance(v, dict):
                table(v, path + [k])
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{'.'.join(key(p) for p in path + [k])}]]")
                    for ik, iv in item.items():
                        lines.append(f"{key(ik)} = {scalar(iv)}")
                    lines.append("")

    table(tree, [])
    return "\n".join(lines)
