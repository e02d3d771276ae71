"""The final report: per CPU, per RX queue, UDP, per source, conservation, and time (emulated
span, wall time, slowdown, who waited for whom).

build() turns a final snapshot into a plain dict (written as report.json); text() renders
it for people. Conservation counts wire frames: every frame the NIC generated is delivered
(read by the application, or consumed by TCP), counted under exactly one drop reason, or
still in a queue named here; ``unaccounted`` must be 0.
"""

from __future__ import annotations

import numpy as np

from . import placement
from .clock import CONTEXT_NAMES
from .syncblock import WAIT_NS, WAITS
from .counters import (DROP_NAMES, IRQ0, MAX_SOURCES, NAPI_GRO_FLUSHED0, NAPI_GRO_MERGED0,
                       NR_DROP, SOFTIRQ0, SRC_DELIVERED0,
                       SRC_RING_DROP0, SRC_SENT0, T0, C, N, NET_RX_SOFTIRQ, Q_BYTES, Q_DROPS,
                       Q_IRQS, Q_PACKETS, nq, src_drop)


def build(snap, queues: dict, cluster=None, interrupted: bool = False, drained: bool = True,
          wall_s: float = 0.0, cpu_s: dict | None = None) -> dict:
    cfg = snap.cfg
    cpu = snap.cpu.astype(np.int64)
    nic = snap.nic.astype(np.int64)
    ncpus, nqueues = cfg.ncpus, cfg.nqueues
    sources = cfg["traffic.sources"]
    nsrc = len(sources)

    cpus = []
    for i in range(ncpus):
        c = cpu[i]
        times = c[T0:T0 + 7]
        total = int(times.sum()) or 1
        cpus.append({
            "cpu": i,
            "processed": int(c[C.PROCESSED]),
            "dropped": int(c[C.DROPPED]),
            "time_squeeze": int(c[C.TIME_SQUEEZE]),
            "received_rps": int(c[C.RECEIVED_RPS]),
            "flow_limit_count": int(c[C.FLOW_LIMIT_COUNT]),
            "hardirqs": int(c[IRQ0:IRQ0 + nqueues].sum()),
            "net_rx_softirqs": int(c[SOFTIRQ0 + NET_RX_SOFTIRQ]),
            "ksoftirqd_wakeups": int(c[C.KSOFTIRQD_WAKEUPS]),
            "context_switches": int(c[C.CTXT]),
            "emulated_ns": int(times.sum()),
            "time_share": {name: round(float(times[k]) / total, 4) for k, name in enumerate(CONTEXT_NAMES)},
            "rps": {
                "ipi_sent": int(c[C.IPI_SENT]),
                "ipi_received": int(c[C.CAL]),
                "backlog_enqueued": int(c[C.BACKLOG_ENQUEUED]),
                "backlog_enqueued_remote": int(c[C.BACKLOG_ENQUEUED_REMOTE]),
                "drops_backlog_full": int(c[C.BACKLOG_DROP_QLEN]),
                "drops_flow_limit": int(c[C.BACKLOG_DROP_FLOW_LIMIT]),
            },
            "backlog_lock": {
                "acquisitions": int(c[C.LOCK_ACQUIRED]),
                "contended": int(c[C.LOCK_CONTENDED]),
                "wait_us": round(int(c[C.LOCK_WAIT_NS]) / 1000.0, 1),
            },
            "gro": {
                "received": int(c[C.GRO_RECEIVED]), "merged": int(c[C.GRO_MERGED]),
                "held": int(c[C.GRO_HELD]), "normal": int(c[C.GRO_NORMAL]),
                "flushed": int(c[C.GRO_FLUSHED]),
            },
        })

    rxq = []
    for q in range(nqueues):
        rxq.append({
            "queue": q,
            "irq": cfg.irq_of_queue(q),
            "cpu": snap.effective_cpu[q],
            "packets": int(nic[nq(q, Q_PACKETS)]),
            "bytes": int(nic[nq(q, Q_BYTES)]),
            "nic_drops": int(nic[nq(q, Q_DROPS)]),
            "irqs_raised": int(nic[nq(q, Q_IRQS)]),
            "gro_merged": int(cpu[:, NAPI_GRO_MERGED0 + q].sum()),
            "gro_flushed": int(cpu[:, NAPI_GRO_FLUSHED0 + q].sum()),
        })

    udp = {
        "InDatagrams": int(cpu[:, C.UDP_IN_DATAGRAMS].sum()),
        "NoPorts": int(cpu[:, C.UDP_NO_PORTS].sum()),
        "InErrors": int(cpu[:, C.UDP_IN_ERRORS].sum()),
        "RcvbufErrors": int(cpu[:, C.UDP_RCVBUF_ERRORS].sum()),
    }

    per_source = []
    for s in range(nsrc):
        drops = {"ring_full": int(nic[SRC_RING_DROP0 + s])}
        for r in range(1, NR_DROP):
            drops[DROP_NAMES[r]] = int(cpu[:, src_drop(r, s)].sum())
        per_source.append({
            "name": sources[s]["name"],
            "sent": int(nic[SRC_SENT0 + s]),
            "delivered": int(cpu[:, SRC_DELIVERED0 + s].sum()),
            "dropped": drops,
        })

    generated = int(nic[SRC_SENT0:SRC_SENT0 + MAX_SOURCES].sum())
    delivered = int(cpu[:, SRC_DELIVERED0:SRC_DELIVERED0 + MAX_SOURCES].sum())
    drops = {"ring_full": int(nic[SRC_RING_DROP0:SRC_RING_DROP0 + MAX_SOURCES].sum())}
    for r in range(1, NR_DROP):
        base = src_drop(r, 0)
        drops[DROP_NAMES[r]] = int(cpu[:, base:base + MAX_SOURCES].sum())
    queued = {k: int(v) for k, v in queues.items()}
    unaccounted = generated - delivered - sum(drops.values()) - sum(queued.values())

    span = snap.uptime_ns
    return_time = timing(cluster, span, wall_s, cpu_s or {})
    return {
        "run_id": getattr(cluster, "run_id", ""),
        "run_dir": getattr(cluster, "run_dir", ""),
        "interrupted": interrupted,
        "drained": drained,
        "emulated_ms": round(snap.uptime_ns / 1e6, 3),
        "cpus": cpus,
        "rx_queues": rxq,
        "udp": udp,
        "sources": per_source,
        "conservation": {
            "generated": generated,
            "delivered": delivered,
            "dropped": drops,
            "queued": queued,
            "unaccounted": unaccounted,
            "ok": unaccounted == 0,
        },
        "time": return_time,
        "causality": {k.lower(): int(cpu[:, getattr(C, k)].sum())
                      for k in ("LATE_FRAMES", "EARLY_FRAMES", "LATE_MSGS")},
        "nic_generated_check": int(nic[N.GENERATED]),
    }


def timing(cluster, span_ns: int, wall_s: float, cpu_s: dict) -> dict:
    """Emulated span, wall time, slowdown, and per agent the share of the wall time it
    waited for its peers (and for whom) and the CPU time its process used."""
    out = {"emulated_ms": round(span_ns / 1e6, 3), "wall_s": round(wall_s, 3),
           "slowdown": round(wall_s / (span_ns / 1e9), 1) if span_ns else None, "agents": []}
    pins = getattr(cluster, "pins", None)
    if pins is not None:
        out["placement"] = placement.describe(pins, getattr(cluster, "pins_refused", []))
    sync = getattr(getattr(cluster, "views", None), "sync", None)
    if sync is None or wall_s <= 0:
        return out
    names = cluster.agents()
    wall_ns = wall_s * 1e9
    for a, name in enumerate(names):
        held = {names[b]: round(int(sync.held[a, b]) / wall_ns, 4)
                for b in range(len(names)) if b != a and int(sync.held[a, b])}
        idle = int(sync.held[a, a])
        waited = int(sync.agents[a, WAIT_NS])
        out["agents"].append({
            "agent": name,
            "waited_share": round((waited - idle) / wall_ns, 4),
            "idle_share": round(idle / wall_ns, 4),
            "waits": int(sync.agents[a, WAITS]),
            "cpu_s": round(cpu_s.get(name, 0.0), 3),
            "held_by": dict(sorted(held.items(), key=lambda kv: -kv[1])),
        })
    return out


def text(r: dict) -> str:
    out = []
    w = out.append
    w(f"emu run {r['run_id']}: {r['emulated_ms']:.2f} emulated ms"
      + ("  (interrupted)" if r["interrupted"] else "")
      + ("" if r["drained"] else "  (queues had not drained at stop)"))
    w("")
    w("CPU  PROCESSED   DROPPED  SQUEEZE  HARDIRQS    NET_RX   HIRQ%  SIRQ%  KSIRQ%  TASK%  IDLE%  STEAL%")
    for c in r["cpus"]:
        s = c["time_share"]
        w(f"{c['cpu']:>3} {c['processed']:>10} {c['dropped']:>9} {c['time_squeeze']:>8} "
          f"{c['hardirqs']:>9} {c['net_rx_softirqs']:>9} {100 * s['hardirq']:>6.1f} "
          f"{100 * s['softirq']:>6.1f} {100 * s['ksoftirqd']:>7.1f} "
          f"{100 * (s['user'] + s['system']):>6.1f} {100 * s['idle']:>6.1f} {100 * s['steal']:>7.1f}")
    if any(c["rps"]["ipi_sent"] or c["rps"]["backlog_enqueued"] or c["received_rps"] for c in r["cpus"]):
        w("")
        w("CPU  IPI_SENT  IPI_RECV  ENQUEUED  REMOTE  DROP_QLEN  DROP_FLOWLIM  FLOW_LIMIT  LOCK_ACQ  CONTENDED  WAIT_us")
        for c in r["cpus"]:
            p, lk = c["rps"], c["backlog_lock"]
            w(f"{c['cpu']:>3} {p['ipi_sent']:>9} {p['ipi_received']:>9} {p['backlog_enqueued']:>9} "
              f"{p['backlog_enqueued_remote']:>7} {p['drops_backlog_full']:>10} {p['drops_flow_limit']:>13} "
              f"{c['flow_limit_count']:>11} {lk['acquisitions']:>9} {lk['contended']:>10} {lk['wait_us']:>8.0f}")
    if any(c["gro"]["merged"] for c in r["cpus"]):
        w("")
        w("CPU  GRO_RECEIVED  MERGED    HELD  NORMAL  FLUSHED")
        for c in r["cpus"]:
            g = c["gro"]
            w(f"{c['cpu']:>3} {g['received']:>13} {g['merged']:>7} {g['held']:>7} {g['normal']:>7} {g['flushed']:>8}")
    w("")
    w("RXQ  IRQ  CPU     PACKETS         BYTES  NIC_DROPS    IRQS  GRO_MERGED  GRO_FLUSHED")
    for q in r["rx_queues"]:
        w(f"{q['queue']:>3} {q['irq']:>4} {q['cpu']:>4} {q['packets']:>11} {q['bytes']:>13} "
          f"{q['nic_drops']:>10} {q['irqs_raised']:>7} {q['gro_merged']:>11} {q['gro_flushed']:>12}")
    u = r["udp"]
    w("")
    w(f"Udp: InDatagrams {u['InDatagrams']}  NoPorts {u['NoPorts']}  InErrors {u['InErrors']}  "
      f"RcvbufErrors {u['RcvbufErrors']}")
    w("")
    w("SOURCE            SENT  DELIVERED  DROPPED (by reason)")
    for s in r["sources"]:
        d = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "-"
        w(f"{s['name'][:14]:<14} {s['sent']:>7} {s['delivered']:>10}  {d}")
    c = r["conservation"]
    w("")
    drops = " + ".join(f"{k} {v}" for k, v in c["dropped"].items())
    queued = " + ".join(f"{k} {v}" for k, v in c["queued"].items())
    w(f"conservation: generated {c['generated']} = delivered {c['delivered']} + dropped ({drops}) "
      f"+ queued ({queued}); unaccounted {c['unaccounted']}" + ("" if c["ok"] else "  <-- FAILED"))
    t = r["time"]
    slow = f"{t['slowdown']:,.0f}" if t["slowdown"] is not None else "-"
    w(f"time: {t['emulated_ms']:.2f} emulated ms in {t['wall_s']:.1f} wall s: slowdown {slow} "
      f"(wall s per emulated s)" + (f"; {t['placement']}" if t.get("placement") else ""))
    for a in t["agents"]:
        by = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(a["held_by"].items())[:3]) or "-"
        w(f"  {a['agent']:<5} waited for peers {100 * a['waited_share']:5.1f}% of the wall time"
          f" (held by: {by}); used {a['cpu_s']:.2f} CPU s" +
          (f"; idle, waiting for work {100 * a['idle_share']:.0f}%" if a["idle_share"] else ""))
    causal = r.get("causality", {})
    bad = {k: v for k, v in causal.items() if v}
    if bad:
        w("causality errors: " + ", ".join(f"{k} {v}" for k, v in bad.items()) + "  <-- BUG")
    return "\n".join(out) + "\n"
