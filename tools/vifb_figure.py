"""docs/vifb_fusion.jpg and .md: the packaged demo model's fusion head on real VIFB pairs.

The demo model was trained on synthetic scenes only, so this shows how its fused image treats real
thermal texture (and gives the fusion metrics on real pairs), not its detections.

    .venv/bin/python tools/vifb_figure.py [--vifb ../shared/data/vifb] [--out docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "training")]

from fusion_training.metrics.fusion import evaluate_fusion  # noqa: E402

from fusion_perception.engine import FusionEngine  # noqa: E402

PAIRS = ("nightCar", "walkingnight", "manlight", "carLight")
METRICS = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM")
ROW_HEIGHT = 240


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vifb", type=Path, default=REPO.parent / "shared" / "data" / "vifb")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "models" / "demo.pt")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    engine = FusionEngine(args.checkpoint, device="cpu")
    rows, table = [], []
    for name in PAIRS:
        vis_bgr = cv2.imread(str(args.vifb / "vis" / f"{name}.jpg"), cv2.IMREAD_COLOR)
        ir = cv2.imread(str(args.vifb / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        if vis_bgr is None or ir is None:
            raise SystemExit(f"vifb_figure: pair {name!r} not found under {args.vifb}")
        rgb = cv2.cvtColor(vis_bgr, cv2.COLOR_BGR2RGB)
        result = engine.infer(rgb, ir.astype(np.float32) / 255.0)
        scores = evaluate_fusion(result.fused_luma, rgb, ir, metrics=list(METRICS))
        table.append(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in METRICS) + " |")
        tiles = [vis_bgr, cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR), result.fused_bgr(rgb)]
        scale = ROW_HEIGHT / vis_bgr.shape[0]
        rows.append(cv2.hconcat([cv2.resize(t, None, fx=scale, fy=scale) for t in tiles]))
    width = max(r.shape[1] for r in rows)
    grid = cv2.vconcat([cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], 0) for r in rows])
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "vifb_fusion.jpg"), grid, [cv2.IMWRITE_JPEG_QUALITY, 85])
    text = [
        "# The demo model's fusion on real visible/infrared pairs (VIFB)",
        "",
        "Made by `tools/vifb_figure.py`. Columns: visible, infrared, fused (fused luminance with the "
        "visible image's chroma). The model was trained on synthetic scenes only; the pairs are "
        "from VIFB (Zhang, Ye, Xiao, CVPR Workshops 2020) and its sources.",
        "",
        "![VIFB pairs fused by the demo model](vifb_fusion.jpg)",
        "",
        "Fusion metrics (textbook conventions, `fusion_training.metrics.fusion`):",
        "",
        "| pair | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
        *table,
        "",
    ]
    (args.out / "vifb_fusion.md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
