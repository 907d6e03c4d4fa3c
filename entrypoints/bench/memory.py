"""Peak RSS of the embedded stack's processes, sampled by a background thread with psutil."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import psutil

MB = 1024 * 1024


@dataclass
class RssSampler:
    processes: dict[str, psutil.Process]
    in_flight: Callable[[], int] = lambda: 0
    interval: float = 0.25
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"t", "in_flight", name: rss_mb, …}
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.processes:
            self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample: dict[str, Any] = {"t": time.time(), "in_flight": self.in_flight()}
            for name, proc in self.processes.items():
                sample[name] = round(_tree_rss(proc) / MB, 1)
            self.samples.append(sample)

    def summary(self) -> dict[str, Any]:
        """Peak RSS per process (MB), the RSS at the most payments in flight, and the most in flight seen."""
        if not self.samples:
            return {"measured": False}
        peak = {name: max(s.get(name, 0.0) for s in self.samples) for name in self.processes}
        most = max(s["in_flight"] for s in self.samples)
        busiest = [s for s in self.samples if s["in_flight"] == most]
        return {
            "measured": True,
            "peak_mb": peak,
            "max_in_flight": most,
            # Per process, its highest RSS while the most payments were in flight.
            "at_max_in_flight_mb": {name: max(s.get(name, 0.0) for s in busiest) for name in self.processes},
            "samples": len(self.samples),
            "interval_s": self.interval,
        }


def _tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and its descendants (a uvicorn reloader or a forked helper counts too)."""
    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return total
