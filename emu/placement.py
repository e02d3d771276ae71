"""Where the emulator's processes run on the host's cores (run.placement).

Emulated time is synchronized conservatively (emu.timesync), so the CPU processes of one host
advance in lockstep: at a lookahead of about a microsecond, one of them runs while the others
wait for it, and a run uses about one core whatever the host has. Every hand-over between
them is a futex wake-up; when the woken process lands on another core, that core must come
out of idle first (on a virtual machine, a halted vCPU is woken through the hypervisor) and
the process finds its data in another core's cache. Keeping the CPU processes on one core
turns each hand-over into a context switch on a busy core, and leaves the other cores to the
NIC, which generates its frames ahead in parallel. Measured on a 2-core VM (docs/benchmarks.md,
"Placement"): the default mix's slowdown 26-28 packed against 32-37 spread; every scenario as
fast or faster.

Placement decides speed only: the counters of a run are the same either way (the
synchronization makes every run exact to the cost model). The CPU processes still run as
separate processes with their own locks, preempted by the host's scheduler, so contention on
the backlogs and sockets still happens for real, within the lookahead.

    pack    the CPU processes share the last core this process may run on, the NIC the one
            before it (the orchestrator and the fork server stay where the OS puts them);
            with a single allowed core there is nothing to choose
    spread  the OS places every process

Pure: the orchestrator passes the cores it may use (its affinity mask, as taskset sets it),
and each child pins itself (emu.child.pin).
"""

from __future__ import annotations

PLACEMENTS = ("pack", "spread")


def plan(placement: str, allowed: set[int] | frozenset[int], names: list[str]) -> dict:
    """child name ("nic", "cpu0", ...) -> the host cores it is pinned to (a frozenset), for
    the children that are pinned; ``allowed``: the cores the orchestrator may run on."""
    if placement not in PLACEMENTS:
        raise ValueError(f"run.placement must be one of {', '.join(PLACEMENTS)} "
                         f"(got {placement!r})")
    cores = sorted(allowed)
    if placement == "spread" or len(cores) < 2:
        return {}
    cpu_core, nic_core = frozenset({cores[-1]}), frozenset({cores[-2]})
    return {n: (nic_core if n == "nic" else cpu_core) for n in names}


def describe(pins: dict, refused: list[str] = ()) -> str:
    """One line for the report: where the children run (pins: those pinned as planned;
    refused: those the host would not pin, which run where the OS puts them)."""
    if not pins:
        text = "placed by the OS"
    else:
        parts = []
        cpu = sorted({c for n, s in pins.items() if n != "nic" for c in s})
        if cpu:
            parts.append(f"CPU processes on host core {','.join(map(str, cpu))}")
        if "nic" in pins:
            parts.append(f"NIC on host core {','.join(map(str, sorted(pins['nic'])))}")
        text = ", ".join(parts)
    if refused:
        text += f" ({', '.join(refused)}: the host refused the core, placed by the OS)"
    return text
