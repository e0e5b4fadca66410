"""tools/real_imagery.py end to end on real pairs, cut down: two pairs per section, an untrained
nano checkpoint, a couple of timed calls."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "real_imagery", REPO / "tools" / "real_imagery.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_report_on_real_data(node_checkpoint, tmp_path):
    tool = load_tool()
    data = tool.default_data()
    needed = [data / "vifb" / "vis", data / "vifb_methods" / "fused", data / "llvip_sample"]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        pytest.skip(f"shared data not present (set FUSION_SHARED_DATA): missing {missing}")
    threads = torch.get_num_threads()
    try:
        code = tool.main(
            [
                "--checkpoint",
                str(node_checkpoint),
                "--baseline",
                str(node_checkpoint),
                "--ablation",
                f"again={node_checkpoint}",
                "--data",
                str(data),
                "--out",
                str(tmp_path),
                "--limit",
                "2",
                "--timing-runs",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    text = (tmp_path / "real_imagery.md").read_text()
    for heading in (
        "## 1. Fusion on VIFB",
        "## 2. Boxes per VIFB scene",
        "## 3. Person detection on LLVIP",
        "## 4. Night scenes",
        "## 5. Synthetic night scenes",
        "## 6. Forward time",
        "## 7. Ablation",
    ):
        assert heading in text
    assert "tools/real_imagery.py" in text and "--limit 2" in text
    assert "has no score calibration" in text  # node_checkpoint was never calibrated
    figures = tmp_path / "real_imagery"
    for name in ("vifb_metrics.png", "llvip_night.png", "vifb_strip.png"):
        assert (figures / name).stat().st_size > 1000
    results = json.loads((figures / "results.json").read_text())
    assert len(results["vifb"]["pairs"]) == 2
    methods = results["vifb"]["means"]
    assert {"CNN", "DLF", "ResNet", "U2Fusion", "SeAFusion", "pixel average", "pixel max"} <= set(
        methods
    )
    for means in methods.values():
        for metric in ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM"):
            assert finite(means[metric]), metric
    main, again = results["models"]
    assert main["vifb"]["means"] == again["vifb"]["means"]
    assert finite(main["boxes"]["mean"]) and isinstance(main["boxes"]["max"], int)
    assert main["llvip"]["images"] == 2 and main["llvip"]["objects"] > 0
    assert finite(main["llvip"]["person_AP50"]) and finite(main["llvip"]["person_AP50_95"])
    assert finite(main["synthetic_night"]["mAP50"]) and main["synthetic_night"]["scenes"] == 2
    timing = results["timing"]
    assert timing["models"]["checkpoint"]["input_size"] == [320, 256]
    assert finite(timing["models"]["baseline"]["forward_ms_median"])
    assert finite(timing["ratio_forward"])
