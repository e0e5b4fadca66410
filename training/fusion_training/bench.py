"""Step-time comparison of the multitask methods (used by `make bench` and the MTL study).

Each method trains the same nano network on the same synthetic batches for a few steps; the
trainer's own per-step time (data loading excluded) is compared within one run.
"""

from __future__ import annotations

import csv
import statistics
import tempfile
from pathlib import Path

from fusion_training.config import load_training_config
from fusion_training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
METHODS = (
    ("weighted_sum", 1),
    ("unitygrad", 1),
    ("unitygrad", 5),
    ("pcgrad", 1),
    ("cagrad", 1),
    ("gradnorm", 1),
)


def step_times(method: str, update_every: int, steps: int, workdir: Path) -> list[float]:
    out = workdir / f"{method}_{update_every}"
    config = load_training_config(
        REPO / "config" / "training" / "synthetic_nano.yaml",
        {
            "mtl.method": method,
            "mtl.update_every": update_every,
            "mtl.options": {},
            "max_steps": steps,
            "dataset.val": None,
            "progress": False,
            "device": "cpu",
            "output_dir": str(out),
        },
    )
    Trainer(config).fit()
    with (out / "train_log.csv").open() as stream:
        return [float(row["step_time_s"]) for row in csv.DictReader(stream)]


def step_time_ratios(steps: int = 40, skip: int = 10) -> dict[str, float]:
    """Median milliseconds per step for each method (first `skip` steps are warm-up)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, every in METHODS:
            times = step_times(method, every, steps, Path(tmp))[skip:]
            name = method if every == 1 else f"{method} (update_every={every})"
            results[name] = 1e3 * statistics.median(times)
    return results
