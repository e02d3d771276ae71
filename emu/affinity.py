"""Which single CPU services each MSI-X vector: the x86 matrix allocator (4.15+).

Mirrors kernel/irq/matrix.c matrix_find_best_cpu() as used by arch/x86/kernel/apic/vector.c
assign_vector_locked(): a vector lives on exactly one CPU (effective_affinity); among the
online CPUs of its smp_affinity mask the one with the most free vectors is chosen, ties to
the lowest CPU number (the scan replaces the best only on a strict >). On a later affinity
change the current CPU is kept if it is online and in the new mask.

Deviations: the NUMA node preference and the managed/reserved vector pools are not modelled;
every CPU starts with the same number of free vectors.
"""

from __future__ import annotations

from .cpumask import cpus_of


def _best_cpu(mask: int, online_mask: int, free: list[int]) -> int:
    best, best_free = -1, -1
    for cpu in cpus_of(mask & online_mask):
        if cpu < len(free) and free[cpu] > best_free:
            best, best_free = cpu, free[cpu]
    if best < 0:
        raise ValueError(f"affinity mask {mask:#x} names no online CPU (online {online_mask:#x})")
    return best


def effective_cpus(masks: list[int], online_mask: int, vectors_per_cpu: int = 200) -> list[int]:
    """The CPU each vector is delivered to, vectors allocated in list order."""
    ncpus = max((m | online_mask).bit_length() for m in [*masks, 0])
    free = [vectors_per_cpu] * ncpus
    out = []
    for mask in masks:
        cpu = _best_cpu(mask, online_mask, free)
        free[cpu] -= 1
        out.append(cpu)
    return out


def reaffine(current_cpu: int, new_mask: int, online_mask: int, free: list[int]) -> int:
    """The vector's CPU after smp_affinity becomes new_mask; updates free in place.

    current_cpu < 0 means the vector has no CPU yet. When the vector moves, the new CPU
    loses a free vector and the old one gets its vector back.
    """
    if current_cpu >= 0 and (new_mask & online_mask) >> current_cpu & 1:
        return current_cpu
    cpu = _best_cpu(new_mask, online_mask, free)
    free[cpu] -= 1
    if 0 <= current_cpu < len(free):
        free[current_cpu] += 1
    return cpu
