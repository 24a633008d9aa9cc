"""GPU telemetry with pynvml: a sampling thread while the engine runs.

On a machine without an NVIDIA GPU (or without the driver library) it records that plainly
and samples nothing; it never fails a run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any


class GpuSampler:
    def __init__(self, device_index: int = 0, interval_s: float = 0.1) -> None:
        self.device_index = device_index
        self.interval_s = interval_s
        self.util: list[int] = []
        self.mem_mb: list[float] = []
        self.name = ""
        self.unavailable = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: tuple[Any, Any] | None = None  # (the pynvml module, the device handle)

    def __enter__(self) -> GpuSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            name = pynvml.nvmlDeviceGetName(handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
            self._nvml = (pynvml, handle)
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.unavailable = f"no NVIDIA GPU visible to NVML ({type(exc).__name__})"
            return self
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        if self._nvml is None:  # started only after NVML answered
            return
        pynvml, handle = self._nvml
        while not self._stop.is_set():
            try:
                self.util.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self.mem_mb.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            except Exception:
                break
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._nvml:
            with contextlib.suppress(Exception):
                self._nvml[0].nvmlShutdown()

    def summary(self) -> dict[str, float | int | str]:
        if self.unavailable:
            return {"gpu": self.unavailable}
        if not self.util:
            return {"gpu": self.name, "gpu_samples": 0}
        ordered = sorted(self.util)
        return {
            "gpu": self.name,
            "gpu_samples": len(self.util),
            "gpu_util_mean": round(sum(self.util) / len(self.util), 1),
            "gpu_util_p10": ordered[max(0, int(0.1 * len(ordered)) - 1)]
            if len(ordered) >= 10
            else ordered[0],
            "gpu_mem_used_mb_mean": round(sum(self.mem_mb) / len(self.mem_mb), 1),
            "gpu_mem_peak_mb": round(max(self.mem_mb), 1),
        }
