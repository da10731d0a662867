"""The specs of the machine edgedistill runs on, read from what the machine reports.

Peak compute comes from the core count, the clock and the vector ISA in /proc/cpuinfo: cores x
GHz x FLOP per cycle per core. The FLOP per cycle are the ISA's, assuming two FMA pipes (AVX2:
2 x 8 fp32 lanes x 2 = 32; AVX-512: 64); int8 dot-product instructions (VNNI) quadruple the rate,
without them int8 doubles it (pmaddubsw). CPUs have no fp16 arithmetic that onnxruntime uses, so
fp16 runs at the fp32 rate. Memory bandwidth is not reported anywhere a program can read it: it is
an assumption, which `edgedistill calibrate` corrects through the fitted efficiencies.
"""

from __future__ import annotations

import os
import platform

from edgedistill.targets.specs import Specs

_ASSUMED_BANDWIDTH_GBS = 20.0


def host_specs() -> Specs:
    """Specs of this machine's CPU, for the threads onnxruntime uses here by default."""
    info = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ghz = float(info.get("cpu MHz", "2000")) / 1000
    flags = set(info.get("flags", "").split())
    fp32_per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags and "fma" in flags else 16
    int8_factor = 4 if flags & {"avx512_vnni", "avx_vnni"} else 2
    fp32 = cores * ghz * fp32_per_cycle
    return Specs(
        cores=cores,
        threads=cores,
        peak_gflops={"fp32": round(fp32, 1), "fp16": round(fp32, 1), "int8": round(fp32 * int8_factor, 1)},
        bandwidth_gbs=_ASSUMED_BANDWIDTH_GBS,
        memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        sources={
            "cores": "os.sched_getaffinity on this machine",
            "peak_gflops": f"/proc/cpuinfo: {info.get('model name', platform.processor())}, "
            f"{ghz:.2f} GHz, {fp32_per_cycle} fp32 FLOP/cycle/core from its flags, int8 x{int8_factor}",
            "bandwidth_gbs": "assumed (not readable from the machine); calibrate corrects for it",
            "memory_bytes": "sysconf(SC_PHYS_PAGES) on this machine",
        },
    )


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
