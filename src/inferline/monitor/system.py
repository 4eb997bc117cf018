"""System metrics of the sampling host: CPU, memory, the data directory's disk, and GPUs through NVML
when the `nvidia-ml-py` package and a driver are present (no GPU: no GPU series)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psutil
import structlog

from inferline.monitor.samples import Sample

log = structlog.get_logger(__name__)


def disk_samples(data_dir: Path) -> list[Sample]:
    usage = psutil.disk_usage(str(data_dir))
    return [
        Sample("disk_free_ratio", usage.free / usage.total if usage.total else 0.0),
        Sample("disk_free_bytes", float(usage.free)),
    ]


class SystemProbe:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        psutil.cpu_percent(interval=None)  # the first reading is since this call, not since boot
        self._nvml: Any = _nvml()

    def samples(self) -> list[Sample]:
        """Blocking (psutil reads /proc): call it on a thread."""
        samples = [
            Sample("cpu_percent", psutil.cpu_percent(interval=None)),
            Sample("memory_used_ratio", psutil.virtual_memory().percent / 100),
            *disk_samples(self.data_dir),
        ]
        if self._nvml is not None:
            samples.extend(self._gpu_samples())
        return samples

    def _gpu_samples(self) -> list[Sample]:
        nvml = self._nvml
        samples = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                labels = {"gpu": str(index)}
                samples.append(Sample("gpu_utilization_percent", float(utilization.gpu), labels))
                samples.append(Sample("gpu_memory_used_ratio", memory.used / memory.total, labels))
        except Exception as exc:  # a driver that went away (reset, unloaded): no GPU series this time
            log.warning("nvml_read_failed", error=str(exc))
        return samples

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def _nvml() -> Any:
    """The initialized NVML module, or None without the package or a driver."""
    try:
        import pynvml  # nvidia-ml-py, optional: `pip install nvidia-ml-py` on GPU hosts
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: a host without a GPU
        return None
    return pynvml
