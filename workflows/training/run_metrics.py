"""Training metrics as the run goes (JSON Lines + TensorBoard events) and PNG plots at the end.

Rank 0 writes ``metrics.jsonl`` (one record per logging step: step, loss, per-frame loss, tokens/s, MFU, LR, …)
and TensorBoard scalars into a local directory. For a local run that directory is ``<storage>/<name>/metrics``
itself; for s3:// storage it is a local staging copy that :meth:`MetricsWriter.sync` uploads to the same place at
every checkpoint and at the end. On resume, records after the resumed step are dropped, so the curves stay one
line. :func:`plot_metrics` draws the loss curve and the per-frame loss (LUMOS_SPEC §7.2: the per-frame loss is the
diagnostic for the frame-wise loss imbalance that tube masks fix).

Also here: the MFU denominator. On GPU it is the datasheet dense peak for the precision; on CPU it is a matmul
peak measured at start-up (STACK_NOTES: ~270–300 GFLOP/s fp32 on 2 threads here), or the best this machine has
shown before with as many threads, whichever is higher: a run that starts while other work loads the CPU would
otherwise divide by a depressed peak and report MFU above 1 (seen: 1.10 with an evaluation running during the
start-up measurement). The best peaks live in ``$LUMOS_PEAK_CACHE`` (default ``~/.cache/lumos/cpu_peak.json``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from typing import Any

import torch

from lumos import storage

METRICS_FILE = "metrics.jsonl"

# Dense (no sparsity) peak TFLOP/s per GPU by name fragment; bf16 and fp32 (TF32 for fp32 training on Ampere+).
GPU_PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "H20": (148.0, 74.0), "A100": (312.0, 156.0),
                   "L40S": (362.0, 181.0), "A10G": (125.0, 62.5), "L4": (121.0, 60.0), "V100": (125.0, 15.7)}


def measure_matmul_peak(threads: int | None = None, size: int = 1024, seconds: float = 0.5,
                        dtype: torch.dtype = torch.float32) -> float:
    """Best matmul throughput (FLOP/s) of this process on CPU, as the MFU denominator.

    Args:
        threads: torch intra-op threads to measure with (``None`` = current setting).
        size: square matrix side.
        seconds: measuring budget.
        dtype: the operands' dtype (``torch.bfloat16`` for runs under bf16 autocast).
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(size, size, generator=g).to(dtype) for _ in range(2))
        a @ b  # warm-up
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - t0))
        return best
    finally:
        torch.set_num_threads(old)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_cache_path() -> str:
    return os.environ.get("LUMOS_PEAK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lumos",
                                                              "cpu_peak.json")


def cpu_peak_flops(threads: int | None = None, measured: float | None = None,
                   dtype: torch.dtype = torch.float32) -> float:
    """The CPU matmul peak for MFU: measured now (or ``measured``, a :func:`measure_matmul_peak` taken by the
    caller), or the best this machine has measured before with as many threads (and this ``dtype``) if that is
    higher (kept in :func:`peak_cache_path`; an unwritable cache only loses the memory)."""
    measured = measure_matmul_peak(threads, dtype=dtype) if measured is None else measured
    key = f"{cpu_name()} | {threads or torch.get_num_threads()} threads"
    if dtype != torch.float32:
        key += f" | {str(dtype).removeprefix('torch.')}"
    path = peak_cache_path()
    try:
        with open(path) as f:
            seen = json.load(f)
    except (OSError, ValueError):
        seen = {}
    seen = seen if isinstance(seen, dict) else {}
    best = seen.get(key)
    best = float(best) if isinstance(best, int | float) else 0.0
    if measured > best:
        seen[key] = best = measured
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(seen, f, indent=1)
            os.replace(tmp, path)
        except OSError:
            pass
    return best


def peak_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of a run with this resolved ``engine.precision`` multiply in."""
    return torch.float32 if precision == "fp32" else torch.bfloat16


def device_peak_flops(device: torch.device, precision: str, threads: int | None = None) -> float:
    """Peak FLOP/s of one worker's device: datasheet for known GPUs, the matmul peak on CPU
    (:func:`cpu_peak_flops`; a bf16 one for the precisions that multiply in bf16)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return (fp32 if precision == "fp32" else bf16) * 1e12
        return measure_matmul_peak(size=4096) if precision == "fp32" else float("nan")
    return cpu_peak_flops(threads, dtype=peak_dtype(precision))


def download_tree(uri: str, local_dir: str) -> None:
    """Copy every file under a directory URI into ``local_dir``, creating sub-directories as needed."""
    for f in storage.list_files(uri):
        target = os.path.join(local_dir, storage.relative(uri, f))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(storage.read_bytes(f))


class WindowStats:
    """Sums over the micro-batches of one logging window (reduced across workers before logging)."""

    def __init__(self, max_frames: int = 32):
        self.max_frames = max_frames
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.count, self.tokens, self.flops, self.data_s = 0.0, 0, 0, 0.0, 0.0
        self.frame_sum = torch.zeros(self.max_frames, dtype=torch.float64)
        self.frame_count = torch.zeros(self.max_frames, dtype=torch.float64)
        self.t0 = time.perf_counter()

    def add(self, loss: float, tokens: int, frame_sum: Any = None, frame_count: Any = None,
            flops: float = 0.0) -> None:
        """Add one micro-batch.

        Args:
            loss: its mean loss.
            tokens: real (unpadded) tokens in it.
            frame_sum, frame_count: [F] summed CE and token count per latent frame (``lumos.loss`` metrics
                ``frame_loss_sum`` / ``frame_tokens``); frames past ``max_frames`` are not tracked.
            flops: training FLOPs spent on it.
        """
        self.loss_sum += float(loss)
        self.count += 1
        self.tokens += int(tokens)
        self.flops += float(flops)
        if frame_sum is None:
            return
        fs = torch.as_tensor(frame_sum, dtype=torch.float64).detach().cpu().flatten()[: self.max_frames]
        fc = torch.as_tensor(frame_count, dtype=torch.float64).detach().cpu().flatten()[: self.max_frames]
        self.frame_sum[: fs.numel()] += fs
        self.frame_count[: fc.numel()] += fc

    def packed(self) -> torch.Tensor:
        """``[loss_sum, count, tokens, flops, data_s, frame_sum..., frame_count...]`` for one all-reduce."""
        head = torch.tensor([self.loss_sum, self.count, self.tokens, self.flops, self.data_s], dtype=torch.float64)
        return torch.cat([head, self.frame_sum, self.frame_count])

    def summary(self, packed: torch.Tensor, world_size: int) -> dict[str, Any]:
        """Loss (mean over micro-batches), token-weighted per-frame loss, global tokens/s, FLOPs and the mean time
        a worker spent waiting for / building batches (``data_s``) from the all-reduced ``packed`` tensor."""
        n = self.max_frames
        loss_sum, count, tokens, flops, data_s = packed[:5].tolist()
        fsum, fcount = packed[5:5 + n], packed[5 + n:]
        last = int(torch.nonzero(fcount).max()) + 1 if fcount.any() else 0
        frame = [float(s / c) if c else float("nan") for s, c in zip(fsum[:last], fcount[:last])]
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return {"loss": loss_sum / max(count, 1), "frame_loss": frame, "tokens_per_s": tokens / dt,
                "tokens": int(tokens), "flops": flops, "window_s": dt, "data_s": data_s / world_size,
                "micro_batches": int(count), "world_size": world_size}


class MetricsWriter:
    """Rank 0's JSONL + TensorBoard writer.

    Args:
        run_uri: ``<storage>/<name>`` (local or s3://); metrics land in ``<run_uri>/metrics``.
        resume_step: drop existing records after this step (``None`` for a fresh run).
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, run_uri: str, resume_step: int | None = None, tensorboard: bool = True):
        self.remote_uri = storage.join(run_uri, "metrics")
        self.local_dir = (tempfile.mkdtemp(prefix="lumos-metrics-") if storage.is_s3(run_uri)
                          else storage.resolve(self.remote_uri)[1])
        os.makedirs(self.local_dir, exist_ok=True)
        self.path = os.path.join(self.local_dir, METRICS_FILE)
        self._restore(resume_step)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(self.local_dir, "tb"), purge_step=resume_step)

    def _restore(self, resume_step: int | None) -> None:
        src = storage.join(self.remote_uri, METRICS_FILE)
        lines: list[str] = []
        if resume_step is not None and storage.exists(src):
            lines = storage.read_text(src).splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= (resume_step or 0)]
        with open(self.path, "w") as f:
            f.writelines(ln + "\n" for ln in keep)
        if storage.is_s3(self.remote_uri) and resume_step is not None:
            download_tree(storage.join(self.remote_uri, "tb"), os.path.join(self.local_dir, "tb"))

    def log(self, step: int, record: dict[str, Any]) -> None:
        """Append one record (JSONL, flushed) and its scalars (TensorBoard)."""
        record = {"step": int(step), "time": time.time(), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        if self.tb is None:
            return
        for key, value in record.items():
            if key in ("step", "time"):
                continue
            if key == "frame_loss":
                for i, v in enumerate(value):
                    if math.isfinite(v):
                        self.tb.add_scalar(f"frame_loss/frame_{i:02d}", v, step)
            elif isinstance(value, int | float) and math.isfinite(value):
                self.tb.add_scalar(f"train/{key}", value, step)
        self.tb.flush()

    def sync(self) -> None:
        """Upload the local files to s3:// storage (a no-op for local runs)."""
        if self.tb is not None:
            self.tb.flush()
        if storage.is_s3(self.remote_uri):
            storage.upload_dir(self.local_dir, self.remote_uri)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        self.sync()


def read_metrics(run_uri: str) -> list[dict[str, Any]]:
    """The records of ``<run_uri>/metrics/metrics.jsonl`` ([] if absent)."""
    uri = storage.join(run_uri, "metrics", METRICS_FILE)
    if not storage.exists(uri):
        return []
    return [json.loads(ln) for ln in storage.read_text(uri).splitlines() if ln.strip()]


def _save_png(fig, uri: str) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    storage.write_bytes(uri, buf.getvalue())


def plot_metrics(run_uri: str) -> list[str]:
    """Draw ``loss.png`` (loss and LR against step) and ``frame_loss.png`` (loss per latent frame over the run)
    into ``<run_uri>/metrics``.

    Returns:
        The URIs written (empty when there are no records yet).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_uri)
    if not records:
        return []
    steps = [r["step"] for r in records]
    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in records], label="AR-DF loss (masked visual tokens)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    if "lr" in records[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in records], color="tab:gray", ls="--", label="LR")
        ax2.set_ylabel("learning rate")
    ax.set_title("training loss")
    ax.legend(loc="upper right")
    out.append(storage.join(run_uri, "metrics", "loss.png"))
    _save_png(fig, out[-1])
    plt.close(fig)

    n_frames = max((len(r.get("frame_loss") or []) for r in records), default=0)
    if n_frames:
        fig, ax = plt.subplots(figsize=(7, 4))
        cmap = plt.get_cmap("viridis")
        for f in range(min(n_frames, 16)):
            pts = [(r["step"], r["frame_loss"][f]) for r in records
                   if len(r.get("frame_loss") or []) > f and math.isfinite(r["frame_loss"][f])]
            if pts:
                ax.plot(*zip(*pts), color=cmap(f / max(1, n_frames - 1)), label=f"frame {f}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy")
        ax.set_title("loss per latent frame (tube masks keep later frames from collapsing)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        out.append(storage.join(run_uri, "metrics", "frame_loss.png"))
        _save_png(fig, out[-1])
        plt.close(fig)
    return out


__all__ = ["GPU_PEAK_TFLOPS", "METRICS_FILE", "MetricsWriter", "WindowStats", "cpu_name", "cpu_peak_flops",
           "device_peak_flops", "download_tree", "measure_matmul_peak", "peak_cache_path", "peak_dtype",
           "plot_metrics", "read_metrics"]
