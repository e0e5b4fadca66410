"""What a training run writes as it goes: per-step and per-evaluation scalars (CSV and
TensorBoard) and the multitask method's summary."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from fusion_perception.schema import json_safe
from fusion_training.engine import StepLog
from fusion_training.mtl import MultiTaskMethod

log = logging.getLogger(__name__)

TRAIN_LOG, EVAL_LOG = "train_log.csv", "eval_log.csv"
MTL_SUMMARY = "mtl_summary.json"


def _fmt(stat: Mapping[str, Any] | None, key: str = "mean") -> str:
    value = (stat or {}).get(key)
    return "n/a" if value is None else f"{value:.3g}"


def write_mtl_summary(method: MultiTaskMethod, out_dir: Path) -> dict[str, Any]:
    """Write the method's run summary to ``mtl_summary.json`` and log it (two lines: the
    numbers, and whether Nash's premise held)."""
    summary = json_safe(method.summary())
    with (out_dir / MTL_SUMMARY).open("w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=2)
    pair = next(iter(summary["ema_cosine"]), None)
    tasks = summary["tasks"]
    log.info(
        "mtl summary (%s, %d steps, %d measurements, %d partial): cos %s mean, EMA cos %s last "
        "/ %s min; |g shared|/|g head| %s; alpha %s; clip factor %s mean, clipped %s of steps; "
        "excluded steps %s (%s)",
        summary["method"],
        summary["steps"],
        summary["measurements"],
        summary["partial_measurements"],
        _fmt(summary["cosine"].get(pair)),
        _fmt(summary["ema_cosine"].get(pair), "last"),
        _fmt(summary["ema_cosine"].get(pair), "min"),
        ", ".join(f"{t} {_fmt(summary['shared_to_head_grad_ratio'][t])}" for t in tasks),
        ", ".join(f"{t} {_fmt(summary['alpha'][t])}" for t in tasks),
        _fmt(summary["clip_factor"]),
        "n/a" if summary["clipped_fraction"] is None else f"{summary['clipped_fraction']:.0%}",
        summary["excluded_steps"],
        out_dir / MTL_SUMMARY,
    )
    if summary["premise_conflicting_gradients"] is False:
        log.warning("mtl: %s", summary["premise"])
    else:
        log.info("mtl: %s", summary["premise"])
    return summary


class RunLogger:
    """Per-step and per-evaluation scalars to CSV and TensorBoard (rank 0 only).

    On resume, rows after ``resume_step`` are dropped from the CSV files (they belong to steps
    that will be trained again) and TensorBoard purges the same steps.
    """

    def __init__(self, out_dir: Path, enabled: bool, log_every: int, resume_step: int | None):
        self.enabled = enabled
        self.log_every = log_every
        self._sums: dict[str, float] = {}
        self._count = 0
        if not enabled:
            return
        self._files = {TRAIN_LOG: out_dir / TRAIN_LOG, EVAL_LOG: out_dir / EVAL_LOG}
        self._columns: dict[str, list[str]] = {}
        for name, path in self._files.items():
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.is_file():
                self._truncate(name, path, resume_step)
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge)

    def _truncate(self, name: str, path: Path, resume_step: int) -> None:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            columns = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r["step"]) <= resume_step]
        self._columns[name] = columns
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, columns)
            writer.writeheader()
            writer.writerows(rows)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self._files[name]
        columns = self._columns.setdefault(name, list(row))
        new = not path.is_file()
        with path.open("a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, columns, restval="", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def step(self, entry: StepLog) -> None:
        for key, value in entry.losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        if not self.enabled or entry.step % self.log_every:
            return
        scalars = entry.scalars()
        self._append(TRAIN_LOG, {"step": entry.step, "epoch": entry.epoch, **scalars})
        for key, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"train/{key}", value, entry.step)

    def epoch_means(self) -> dict[str, float]:
        """Mean of each loss term over the steps since the last call."""
        means = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means

    def evaluation(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._append(EVAL_LOG, {"step": step, "epoch": epoch, **metrics})
        for key, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"val/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
