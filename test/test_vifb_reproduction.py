"""The `vifb` preset against VIFB's own MATLAB values, and analytic checks of the metrics VIFB adds.

VIFB (Zhang, Ye, Xiao, CVPR-W 2020) publishes per-image values of 13 metrics for the fused outputs
of five deep methods on its 21 pairs (shared data: `vifb/`, `vifb_methods/`). The preset must
reproduce them: every method's mean within 1 %, every image within 2 %. All 5 x 21 images are
scored once per module (about 40 s on one core), so the comparison is marked slow.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from fusion_training.benchmark import VIFB_NAMES
from fusion_training.metrics import fusion as fm

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FUSION_SHARED_DATA", REPO.parent / "shared" / "data"))
METHODS_DIR = DATA / "vifb_methods"
REFERENCE = METHODS_DIR / "vifb_metrics.json"

MEAN_TOL, IMAGE_TOL = 0.01, 0.02


def _missing_data() -> str | None:
    needed = [DATA / "vifb" / "vis", DATA / "vifb" / "ir", METHODS_DIR / "fused", REFERENCE]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        return f"VIFB shared data not found (set FUSION_SHARED_DATA): missing {missing}"
    return None


def _load(path: Path) -> np.ndarray:
    """uint8 image as stored: HxW for a greyscale JPEG, RGB HxWx3 for a colour one."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def _triple(pair: str, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fused = _load(METHODS_DIR / "fused" / f"{pair}_{method}.jpg")
    return (
        fused,
        _load(DATA / "vifb" / "vis" / f"{pair}.jpg"),
        _load(DATA / "vifb" / "ir" / f"{pair}.jpg"),
    )


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, dict[str, float]]]:
    reason = _missing_data()
    if reason:
        pytest.skip(reason)
    return json.loads(REFERENCE.read_text())["metrics"]


@pytest.fixture(scope="module")
def scored(reference) -> dict[tuple[str, str], dict[str, float]]:
    """(method, pair) -> our vifb-preset values of the 13 VIFB metrics."""
    return {
        (method, pair): fm.evaluate_fusion(
            *_triple(pair, method), preset="vifb", metrics=list(VIFB_NAMES)
        )
        for method, pairs in reference.items()
        for pair in pairs
    }


def _relative_errors(reference, scored, name: str) -> dict[str, np.ndarray]:
    out = {}
    for method, pairs in reference.items():
        ours = np.array([scored[method, p][name] for p in pairs])
        theirs = np.array([pairs[p][VIFB_NAMES[name]] for p in pairs])
        out[method] = ours / theirs - 1.0
    return out


@pytest.mark.parametrize(("method", "pair"), [("CNN", "carLight"), ("SeAFusion", "manWalking")])
def test_single_pair_needs_per_channel_colour(reference, method, pair):
    """The per-channel preset hits VIFB's values on one image; luma scoring misses them."""
    fused, vis, ir = _triple(pair, method)
    ref = reference[method][pair]
    ours = fm.evaluate_fusion(fused, vis, ir, preset="vifb", metrics=list(VIFB_NAMES))
    for name, value in ours.items():
        assert value == pytest.approx(ref[VIFB_NAMES[name]], rel=1e-3), name
    # VIFB's Variance is the mean of the three channel SDs (CNN/carLight: 69.676)
    channel_sds = [float(fused[:, :, k].std()) for k in range(3)]
    assert ours["SD"] == pytest.approx(np.mean(channel_sds), rel=1e-12)
    luma = fm.evaluate_fusion(
        fused, vis, ir, preset="vifb", metrics=list(VIFB_NAMES), colour="luma"
    )
    if pair == "manWalking":  # a saturated-colour image: luma is far off
        for name in ("SD", "CE", "Qcv"):
            assert abs(luma[name] / ref[VIFB_NAMES[name]] - 1) > 0.05, name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VIFB_NAMES))
def test_vifb_preset_reproduces_every_image(reference, scored, name):
    errors = _relative_errors(reference, scored, name)
    worst = {m: float(np.abs(e).max()) for m, e in errors.items()}
    assert max(worst.values()) <= IMAGE_TOL, (name, worst)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VIFB_NAMES))
def test_vifb_preset_reproduces_method_means(reference, scored, name):
    means = {}
    for method, pairs in reference.items():
        ours = np.mean([scored[method, p][name] for p in pairs])
        theirs = np.mean([pairs[p][VIFB_NAMES[name]] for p in pairs])
        means[method] = float(ours / theirs - 1.0)
    assert max(abs(v) for v in means.values()) <= MEAN_TOL, (name, means)


# --- analytic checks of the VIFB metrics (no shared data needed) --------------------------------


@pytest.fixture(scope="module")
def planes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, vis, ir) float 0..255 greyscale 96x112 with integer levels."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:96, 0:112].astype(np.float64)
    ir = np.rint(np.clip(50 + 140 * np.exp(-((xx - 40) ** 2 + (yy - 50) ** 2) / 400.0), 0, 255))
    vis = np.rint(np.clip(100 + 70 * np.sin(xx / 4.0) + rng.normal(0, 5, xx.shape), 0, 255))
    return np.rint((ir + vis) / 2), vis, ir


def test_rmse_and_cross_entropy_closed_forms():
    a = np.tile(np.linspace(20, 200, 50), (40, 1))
    f = a + 10.0
    assert fm.rmse(f, a, a) == pytest.approx(10.0)
    assert fm.rmse(f, a, a, norm="vifb_sqrt") == pytest.approx(10.0 / math.sqrt(a.size))
    assert fm.rmse(a, a, a) == 0.0
    # VIFB's PSNR is 10 log10(255^2 / its RMSE) (both use sqrt(SSE)/(MN)).
    assert fm.psnr(f, a, a, mse="vifb_sqrt") == pytest.approx(
        10 * math.log10(255**2 / fm.rmse(f, a, a, norm="vifb_sqrt"))
    )
    # CE: relative entropy of histograms, bits. Same histogram (a permutation) -> 0.
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (30, 40)).astype(np.float64)
    assert fm.cross_entropy(x, rng.permutation(x.ravel()).reshape(x.shape)) == pytest.approx(0.0)
    half = np.zeros((2, 4))
    half[:, 2:] = 255.0  # p = (1/2, 1/2) on levels 0 and 255
    quarter = half.copy()
    quarter[0, :] = 255.0  # p = (1/4, 3/4)
    expected = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    assert fm.cross_entropy(half, quarter) == pytest.approx(expected, rel=1e-12)
    assert fm.cross_entropy(half + 0.6, quarter, "floor") == pytest.approx(expected, rel=1e-12)


def test_edge_intensity_of_a_ramp():
    """Sobel on a horizontal ramp of slope s: |Sx| = 8 s inside, 4 s in the replicated border columns."""
    m, n, s = 20, 30, 3.0
    ramp = np.tile(np.arange(n) * s, (m, 1))
    expected = (8 * s * (n - 2) + 4 * s * 2) / n
    assert fm.edge_intensity(ramp) == pytest.approx(expected, rel=1e-12)
    assert fm.edge_intensity(np.full((9, 9), 77.0)) == 0.0


def test_chen_metrics_on_perfect_and_degraded_fusion(planes):
    fused, vis, ir = planes
    for stretch in ("exact", "round"):
        assert fm.chen_blum(vis, vis, vis, stretch) == pytest.approx(1.0, abs=1e-12)
        assert fm.chen_varshney(vis, vis, vis, stretch=stretch) == pytest.approx(0.0, abs=1e-12)
    good = fm.chen_blum(fused, ir, vis)
    noisy = np.clip(fused + np.random.default_rng(3).normal(0, 25, fused.shape), 0, 255)
    assert 0.0 < fm.chen_blum(noisy, ir, vis) < good < 1.0
    assert fm.chen_varshney(noisy, ir, vis) > fm.chen_varshney(fused, ir, vis) > 0.0
    # both are invariant to an affine change of intensities (each image is min-max stretched)
    assert fm.chen_blum(0.5 * fused + 20, ir, vis) == pytest.approx(good, rel=1e-9)
    assert fm.chen_varshney(0.5 * fused + 20, ir, vis) == pytest.approx(
        fm.chen_varshney(fused, ir, vis), rel=1e-9
    )


def test_chen_varshney_blocks_are_zero_padded():
    """A 20x20 image has one full 16x16 block and three partial ones padded with zeros."""
    x = np.arange(20 * 20, dtype=np.float64).reshape(20, 20)
    sums = fm._block_reduce(x, 16, "sum")
    means = fm._block_reduce(x, 16, "mean")
    assert sums.shape == (2, 2)
    assert sums[1, 1] == pytest.approx(x[16:, 16:].sum())
    assert means[1, 1] == pytest.approx(x[16:, 16:].sum() / 256.0)


def test_per_channel_colour_mode():
    rng = np.random.default_rng(9)
    fused = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    vis = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ir_grey = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    ir_rgb = np.repeat(ir_grey[:, :, None], 3, axis=2)
    names = ["EN", "SD", "AG", "MI", "Qabf", "SSIM", "PSNR", "RMSE", "CE", "EI", "Qcb", "Qcv"]
    per = fm.evaluate_fusion(fused, vis, ir_grey, preset="vifb", metrics=names)
    # an infrared stored as three equal channels scores as the greyscale one
    assert fm.evaluate_fusion(fused, vis, ir_rgb, preset="vifb", metrics=names) == per
    cfg = fm.PRESETS["vifb"]
    for name in names:
        channels = [
            fm.evaluate_fusion(fused[:, :, k], vis[:, :, k], ir_grey, preset="vifb", metrics=[name])
            for k in range(3)
        ]
        assert per[name] == pytest.approx(np.mean([c[name] for c in channels]), rel=1e-12), name
    # SF: VIFB tiles the channels side by side; "mean" averages the channel SFs
    tiled = np.concatenate([fused[:, :, k] for k in range(3)], axis=1).astype(np.float64)
    sf = fm.evaluate_fusion(fused, vis, ir_grey, preset="vifb", metrics=["SF"])["SF"]
    assert sf == pytest.approx(fm.spatial_frequency(tiled, "MN"), rel=1e-12)
    sf_mean = fm.evaluate_fusion(
        fused, vis, ir_grey, preset="vifb", metrics=["SF"], sf_channels="mean"
    )["SF"]
    sf_channels = [fm.spatial_frequency(fused[:, :, k].astype(float), "MN") for k in range(3)]
    assert sf_mean == pytest.approx(np.mean(sf_channels), rel=1e-12)
    # a greyscale fused image is scored against the sources' luma, whatever `colour` says
    grey = fused[:, :, 0]
    luma = fm.evaluate_fusion(grey, vis, ir_grey, preset="vifb", metrics=names, colour="luma")
    assert fm.evaluate_fusion(grey, vis, ir_grey, preset="vifb", metrics=names) == luma
    assert cfg.colour == "per_channel"
    assert fm.PRESETS["textbook"].colour == "luma"


def test_new_options_are_validated(planes):
    fused, vis, ir = planes
    for option, value in (
        ("colour", "rgb"),
        ("sf_channels", "max"),
        ("rmse_norm", "sqrt"),
        ("qc_stretch", "none"),
        ("qcv_window", 1),
        ("qcv_alpha", 0.0),
    ):
        with pytest.raises(ValueError, match=option):
            fm.evaluate_fusion(fused, vis, ir, float_max=255.0, metrics=["Qcv"], **{option: value})
