"""What this machine can do: CPU, memory, GPUs, Apple MPS, the engines importable here."""
from __future__ import annotations

import importlib.util
import os
import platform

from swarm.records import Hardware


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def probe_hardware() -> Hardware:
    has_torch = importlib.util.find_spec("torch") is not None
    gpus: tuple = ()
    mps = False
    if has_torch:
        import torch

        if torch.cuda.is_available():
            gpus = tuple(
                (torch.cuda.get_device_name(i), round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1))
                for i in range(torch.cuda.device_count())
            )
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    engines = tuple(
        name
        for name, module in (("transformers", "transformers"), ("llamacpp", "llama_cpp"))
        if importlib.util.find_spec(module) is not None
    )
    return Hardware(
        cpu=_cpu_model()[:200],
        cores=os.cpu_count() or 1,
        ram_gb=_ram_gb(),
        gpus=gpus,
        mps=mps,
        torch=has_torch,
        engines=engines,
    )
