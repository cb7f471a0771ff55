"""Provenance of a measurement: which machine, and how much memory the process used at its peak.

One place for both, so that every report, benchmark and ``metrics.json`` says the same thing.
"""
import datetime
import os
import platform
import sys
from pathlib import Path


def cpu_count():
    """CPUs this process may run on (its affinity where the OS has one, else ``os.cpu_count``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model():
    """The processor's name: ``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus():
    """Names of the GPUs TensorFlow sees (empty without TensorFlow loaded or without a GPU)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return []
    return [device.name for device in tf.config.list_physical_devices("GPU")]


def description():
    """One line: ``"<cpu model>, <n> CPUs, <GPUs or 'no GPU'>"``, e.g. for a report's footer."""
    accelerators = gpus()
    return f"{cpu_model()}, {cpu_count()} CPUs, {', '.join(accelerators) if accelerators else 'no GPU'}"


def today():
    """UTC time now, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def peak_rss_mb():
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status`` (the kernel's high-water mark); elsewhere
    ``ru_maxrss`` from ``getrusage`` (bytes on macOS, KiB on the BSDs). Windows has
    neither: the current RSS from psutil stands in (a lower bound of the peak).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def available_memory(cgroup=Path("/sys/fs/cgroup")):
    """Bytes this process may still take: the system's available memory, or less where a cgroup caps its group (a
    container's ``--memory``, Kubernetes, Slurm: the system's figure is then the host's). The cgroup's usage counts
    without its inactive page cache, which the kernel reclaims before it kills (as ``docker stats`` counts it)."""
    import psutil

    free = psutil.virtual_memory().available
    for limit, usage, stat, cache in (("memory.max", "memory.current", "memory.stat", "inactive_file"),  # v2
                                      ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",  # v1
                                       "memory/memory.stat", "total_inactive_file")):
        try:
            cap = (cgroup / limit).read_text().strip()
            if cap == "max" or int(cap) >= 2**60:  # no limit (v1 writes a number near 2**63)
                return free
            used = int((cgroup / usage).read_text())
            stats = dict(line.split() for line in (cgroup / stat).read_text().splitlines() if len(line.split()) == 2)
            return min(free, max(int(cap) - used + int(stats.get(cache, 0)), 0))
        except (OSError, ValueError):
            continue
    return free
