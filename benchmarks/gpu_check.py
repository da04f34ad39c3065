"""GPU check: trials really run on CUDA, and packing K trials per GPU multiplies throughput.

    bash benchmarks/gpu_check.sh            # on a CUDA machine: the full check (< 8 min on one H100)
    bash benchmarks/gpu_check.sh            # without CUDA: says so, runs the CPU path, exits 0

(a) a short sweep whose every trial must report a CUDA device (also read back from MLflow's
    device tag when MLflow is installed); (b) the same 16 quick trials of each trainer with
    --trials-per-device 1, 4 and 8: trials per minute and the ratio to K = 1; (c) each trial's
    peak GPU memory and the GPU utilization sampled (NVML) during each sweep.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.runner import SweepOptions, launch  # noqa: E402

SPACES = ["gflownet-quick", "diffusion-quick", "locoprop-quick"]


class NvmlSampler:
    """Samples GPU utilization and memory every 0.25 s while a sweep runs."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self._nvml = None

    def __enter__(self) -> NvmlSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.util.append(float(rates.gpu))
            self.mem.append(info.used / 2**20)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def tracking_uri(folder: Path, tracking: str) -> str:
    if tracking == "none" or not importlib.util.find_spec("mlflow"):
        return "none"
    return f"sqlite:///{folder / 'mlflow.db'}"


def sweep(space: str, k: int, trials: int, cuda: bool, folder: Path, tag: str,
          tracking: str = "sqlite") -> tuple[object, NvmlSampler]:
    options = SweepOptions(
        space=space, tuner="random", trials=trials, seed=0, name=f"{space}-k{k}-{tag}",
        devices="0" if cuda else "cpu", trials_per_device=k, workers=None if cuda else k,
        tracking_uri=tracking_uri(folder, tracking), state_root=folder / "sweeps",
    )
    with NvmlSampler() as sampler:
        summary = launch(options)
    return summary, sampler


def check_devices(summary: object, cuda: bool, folder: Path) -> bool:
    results = summary.stats.results  # type: ignore[attr-defined]
    devices = {r.device for r in results}
    ok = all(d.startswith("cuda") for d in devices) if cuda else devices == {"cpu"}
    print(f"(a) {len(results)} trials ran on {sorted(devices)}: {'OK' if ok else 'FAIL'}")
    if summary.tracking_uri:  # type: ignore[attr-defined]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(summary.tracking_uri)  # type: ignore[attr-defined]
        runs = client.search_runs([client.get_experiment_by_name(summary.experiment).experiment_id])  # type: ignore[attr-defined]
        tags = {r.data.tags.get("harness.device") for r in runs if r.data.tags.get("harness.kind") == "trial"}
        tag_ok = all(t and t.startswith("cuda") for t in tags) if cuda else tags == {"cpu"}
        print(f"    MLflow device tags {sorted(t or '-' for t in tags)}: {'OK' if tag_ok else 'FAIL'}")
        ok = ok and tag_ok
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--trials", type=int, default=None, help="trials per sweep (16 on CUDA, 2 on CPU)")
    parser.add_argument("--ks", default=None, help="trials per device (1,4,8 on CUDA; 1,2 on CPU)")
    parser.add_argument("--tracking", choices=["sqlite", "none"], default="sqlite",
                        help="log the packing sweeps to a temporary SQLite MLflow store, or not at all")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print("no CUDA device here: running the CPU path of the same check (workers instead of GPU slots)")
    trials = args.trials or (16 if cuda else 2)
    ks = [int(k) for k in (args.ks or ("1,4,8" if cuda else "1,2")).split(",")]
    spaces = args.spaces.split(",")
    t0 = time.perf_counter()
    ok = True
    reasons: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        summary, _ = sweep(spaces[0], ks[-1], max(2, ks[-1]), cuda, folder, "devices")
        ok &= check_devices(summary, cuda, folder)

        print(f"(b, c) {trials} trials per sweep, the same configurations for every K")
        header = (f"{'space':<18}{'K':>3}{'trials/min':>12}{'x K=1':>8}{'trial s':>9}{'slots busy':>11}"
                  f"{'failed':>8}{'peak MB/trial':>15}{'GPU util %':>12}{'GPU mem MB':>12}")
        print(header)
        for space in spaces:
            base = None
            for k in ks:
                summary, sampler = sweep(space, k, trials, cuda, folder, "pack", args.tracking)
                s = summary.stats  # type: ignore[attr-defined]
                per_min = 60 * s.finished / max(s.wall_seconds(), 1e-9)
                base = base or per_min
                peaks = [r.metrics["gpu_peak_mem_mb"] for r in s.results if "gpu_peak_mem_mb" in r.metrics]
                oom = sum("out of memory" in (r.reason or "").lower() for r in s.results)
                ok &= oom == 0
                util = f"{statistics.mean(sampler.util):.0f}/{max(sampler.util):.0f}" if sampler.util else "-"
                mem = f"{max(sampler.mem):.0f}" if sampler.mem else "-"
                peak = f"{max(peaks):.0f}" if peaks else "-"
                trial_s = s.busy_seconds / max(len(s.results), 1)
                print(f"{space:<18}{k:>3}{per_min:>12.1f}{per_min / base:>8.2f}{trial_s:>9.2f}"
                      f"{s.utilization(k):>11.2f}{s.failed:>8}{peak:>15}{util:>12}{mem:>12}")
                reasons.update((r.reason or "?").splitlines()[0][:120] for r in s.results if r.state.value == "failed")
    for reason in sorted(reasons):
        print(f"failed: {reason}")
    print("'trial s' is a trial's own mean seconds; 'slots busy' = trial seconds / (K x wall)")
    print(f"total {time.perf_counter() - t0:.0f} s; {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
