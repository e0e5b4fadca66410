"""Fusion metrics: analytic cases, brute-force oracles, preset conventions and a real VIFB pair."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter

import cv2
import numpy as np
import pytest
from fusion_training.metrics import fusion as fm


@pytest.fixture(scope="module")
def triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, vis, ir) uint8 80x96: smooth blobs (IR) and stripes (VIS), neither spanning 0..255."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:80, 0:96].astype(np.float64)
    ir = 40 + 150 * np.exp(-((xx - 30) ** 2 + (yy - 40) ** 2) / 300.0) + rng.normal(0, 4, xx.shape)
    vis = 90 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + rng.normal(0, 6, xx.shape)
    ir8 = np.clip(np.rint(ir), 10, 240).astype(np.uint8)
    vis8 = np.clip(np.rint(vis), 10, 240).astype(np.uint8)
    fused = ((ir8.astype(np.float64) + vis8) / 2).round().astype(np.uint8)
    return fused, vis8, ir8


def _g(img: np.ndarray) -> np.ndarray:
    return fm.prepare_image(img)


def test_constant_image_has_no_activity(triple):
    _, vis, ir = triple
    flat = np.full(vis.shape, 100, np.uint8)
    for preset in fm.PRESETS:
        out = fm.evaluate_fusion(flat, vis, ir, preset=preset, metrics=["EN", "SD", "SF", "AG"])
        assert out == {"EN": 0.0, "SD": 0.0, "SF": 0.0, "AG": 0.0}, preset


def test_fused_equal_to_source_gives_ssim_one_and_mi_entropy(triple):
    _, _, ir = triple
    a = _g(ir)
    assert fm.ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    assert fm.ssim(a, a.copy(), "uniform", 7, data_range=2.0, covariance="sample") == pytest.approx(
        1.0, abs=1e-12
    )
    h_bits = fm.entropy(a)
    assert h_bits > 4.0
    assert fm.mutual_information(a, a.copy(), unit="bits") == pytest.approx(h_bits, abs=1e-12)
    h_nats = fm.mutual_information(a, a.copy(), unit="nats")
    assert h_nats == pytest.approx(h_bits * math.log(2), abs=1e-12)
    cfg = fm.resolve_config(mi_normalize="hossny")
    assert fm.fusion_mutual_information(a, a, a, cfg) == pytest.approx(2.0, abs=1e-12)


def test_ssim_matches_brute_force_windows():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (19, 23))
    f = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    for window, size, cov, data_range in (
        ("gaussian", 11, "population", 255.0),
        ("uniform", 7, "sample", 2.0),
    ):
        if window == "gaussian":
            g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * 1.5**2))
            w = np.outer(g, g) / np.outer(g, g).sum()
        else:
            w = np.full((size, size), 1.0 / size**2)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        corr = size * size / (size * size - 1.0) if cov == "sample" else 1.0
        vals = []
        for i in range(x.shape[0] - size + 1):
            for j in range(x.shape[1] - size + 1):
                px, pf = x[i : i + size, j : j + size], f[i : i + size, j : j + size]
                mx, mf = (w * px).sum(), (w * pf).sum()
                vx = ((w * px * px).sum() - mx * mx) * corr
                vf = ((w * pf * pf).sum() - mf * mf) * corr
                cxf = ((w * px * pf).sum() - mx * mf) * corr
                num = (2 * mx * mf + c1) * (2 * cxf + c2)
                vals.append(num / ((mx * mx + mf * mf + c1) * (vx + vf + c2)))
        got = fm.ssim(x, f, window, size, 1.5, data_range, cov)
        assert got == pytest.approx(np.mean(vals), rel=1e-10)


def test_mutual_information_matches_counting():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 12, (30, 40)).astype(np.float64) * 20
    f = np.clip(x + rng.integers(-20, 21, x.shape), 0, 255).astype(np.float64)
    n = x.size
    joint = Counter(zip(x.ravel().tolist(), f.ravel().tolist(), strict=True))
    px, pf = Counter(x.ravel().tolist()), Counter(f.ravel().tolist())
    expected = sum(
        c / n * math.log2((c / n) / (px[a] / n * pf[b] / n)) for (a, b), c in joint.items()
    )
    assert fm.mutual_information(x, f) == pytest.approx(expected, rel=1e-12)


def test_psnr_conventions_on_a_constant_error():
    a = np.tile(np.linspace(20, 200, 50), (40, 1))
    assert fm.psnr(a, a, a) == math.inf
    for mse in ("standard", "unit_scale", "vifb_sqrt"):
        assert fm.psnr(a.copy(), a, a, mse=mse) == math.inf
    f = a + 10.0  # MSE = 100 against both sources
    assert fm.psnr(f, a, a) == pytest.approx(10 * math.log10(255**2 / 100))
    assert fm.psnr(f, a, a, mse="unit_scale") == pytest.approx(
        10 * math.log10(255**2 / 100) + 20 * math.log10(255)
    )
    vifb_mse = 10.0 / math.sqrt(a.size)  # sqrt(SSE) / (MN) with SSE = 100 MN
    assert fm.psnr(f, a, a, mse="vifb_sqrt") == pytest.approx(10 * math.log10(255**2 / vifb_mse))
    assert fm.psnr(f, a, a, peak="max_fused") == pytest.approx(10 * math.log10(210**2 / 100))


def test_correlations_of_linear_transforms(triple):
    _, vis, ir = triple
    a, b = _g(ir), _g(vis)
    assert fm.pearson(a, 0.5 * a + 30) == pytest.approx(1.0, abs=1e-12)
    assert fm.pearson(a, 255 - a) == pytest.approx(-1.0, abs=1e-12)
    assert fm.evaluate_fusion(ir, ir, ir, metrics=["CC"])["CC"] == pytest.approx(1.0, abs=1e-12)
    assert fm.scd(a + b, a, b) == pytest.approx(2.0, abs=1e-12)  # F - B = A and F - A = B
    assert math.isnan(fm.pearson(a, np.full_like(a, 5.0)))


def test_vif_identity_blur_and_contrast(triple):
    _, _, ir = triple
    a = _g(ir)
    assert fm.visual_information_fidelity(a, a.copy()) == pytest.approx(1.0, abs=1e-6)
    blurred = cv2.GaussianBlur(a, (0, 0), 2.0)
    assert fm.visual_information_fidelity(a, blurred) < 0.8
    stretched = np.clip((a - a.mean()) * 1.5 + a.mean(), 0, 255)
    assert fm.visual_information_fidelity(a, stretched) > 1.0
    with pytest.raises(ValueError, match="too small"):
        fm.visual_information_fidelity(a[:30, :30], a[:30, :30])


def test_qabf_perfect_fusion_hits_the_sigmoid_bound(triple):
    _, _, ir = triple
    a = _g(ir)
    bound = (0.9994 / (1 + math.exp(-15 * 0.5))) * (0.9879 / (1 + math.exp(-22 * 0.2)))
    assert fm.qabf(a, a, a) == pytest.approx(bound, rel=1e-12)
    assert fm.qabf(a, a, a, equal_ratio="g_fused") > bound  # the shared script quirk


def test_noise_moves_metrics_monotonically(triple):
    fused, vis, ir = triple
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, fused.shape)
    results = [
        fm.evaluate_fusion(np.clip(fused + s * noise, 0, 255), vis, ir, float_max=255.0)
        for s in (0.0, 5.0, 15.0, 40.0)
    ]
    for name in ("SSIM", "PSNR", "CC", "VIF", "Qabf"):
        seq = [r[name] for r in results]
        assert all(x > y for x, y in itertools.pairwise(seq)), (name, seq)
    for name in ("SF", "AG", "SD"):
        seq = [r[name] for r in results]
        assert all(x < y for x, y in itertools.pairwise(seq)), (name, seq)


def test_presets_differ_exactly_where_conventions_differ(triple):
    fused, vis, ir = triple
    res = {p: fm.evaluate_fusion(fused, vis, ir, preset=p) for p in fm.PRESETS}
    text = res["textbook"]
    m, n = fused.shape
    assert res["tang"]["SF"] == pytest.approx(text["SF"] / 255)
    assert res["vifb"]["SF"] < text["SF"]
    assert res["tang"]["PSNR"] == pytest.approx(text["PSNR"] + 20 * math.log10(255))
    assert res["ivif_zoo"]["PSNR"] == pytest.approx(res["tang"]["PSNR"])
    assert res["vifb"]["PSNR"] > 45 > text["PSNR"]
    assert res["cddfuse"]["MI"] == pytest.approx(text["MI"] * math.log(2))
    # min-max stretching relabels integer levels one-to-one (MI unchanged) but re-bins float ones
    assert res["vifb"]["MI"] == pytest.approx(res["cddfuse"]["MI"])
    soft = (ir.astype(np.float64) + vis) / 2 + 0.3
    vifb_mi = fm.evaluate_fusion(soft, vis, ir, "vifb", ["MI"], float_max=255.0)["MI"]
    cdd_mi = fm.evaluate_fusion(soft, vis, ir, "cddfuse", ["MI"], float_max=255.0)["MI"]
    assert vifb_mi != pytest.approx(cdd_mi)
    assert res["cddfuse"]["AG"] == pytest.approx(text["AG"] * (m - 1) * (n - 1) / (m * n))
    assert res["cddfuse"]["SSIM"] != pytest.approx(text["SSIM"])
    assert res["ivif_zoo"]["SSIM"] == pytest.approx(text["SSIM"])
    assert res["ivif_zoo"]["VIF"] != pytest.approx(text["VIF"])
    assert res["vifb"]["EN"] == pytest.approx(text["EN"])  # integer input: floor == round
    assert "SSIM" not in res["tang"]
    with pytest.raises(ValueError, match="MEF-SSIM"):
        fm.evaluate_fusion(fused, vis, ir, preset="tang", metrics=["SSIM"])
    mean_ssim = fm.evaluate_fusion(fused, vis, ir, metrics=["SSIM"], ssim_reduce="mean")["SSIM"]
    assert mean_ssim == pytest.approx(text["SSIM"] / 2)


def test_input_conventions(triple):
    fused, vis, ir = triple
    base = fm.evaluate_fusion(fused, vis, ir)
    as_float = fm.evaluate_fusion(fused / 255.0, vis / 255.0, ir.astype(np.float32) / 255)
    for name, value in base.items():
        assert as_float[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
    rgb = np.stack([vis, np.roll(vis, 3, axis=1), ir], axis=-1)
    y = fm.prepare_image(rgb)
    assert np.abs(y - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).max() <= 1.0
    assert np.array_equal(y, np.floor(rgb.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5))


def test_bad_inputs_raise_clear_errors(triple):
    fused, vis, ir = triple
    with pytest.raises(ValueError, match="float_max"):
        fm.evaluate_fusion(fused.astype(np.float32), vis, ir)
    with pytest.raises(ValueError, match="one size"):
        fm.evaluate_fusion(fused[:-1], vis, ir)
    with pytest.raises(ValueError, match="preset"):
        fm.evaluate_fusion(fused, vis, ir, preset="matlab")
    with pytest.raises(ValueError, match="unknown metric option"):
        fm.evaluate_fusion(fused, vis, ir, mi_base=2)
    with pytest.raises(ValueError, match="mi_unit"):
        fm.evaluate_fusion(fused, vis, ir, mi_unit="bans")
    with pytest.raises(ValueError, match="NIQE"):
        fm.evaluate_fusion(fused, vis, ir, metrics=["NIQE"])
    with pytest.raises(ValueError, match="dtype"):
        fm.evaluate_fusion(fused.astype(np.uint16), vis, ir)


def test_all_metrics_fast_at_640x512():
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (512, 640), dtype=np.uint8) for _ in range(3)]
    fm.evaluate_fusion(*imgs)
    start = time.perf_counter()
    fm.evaluate_fusion(*imgs)
    assert time.perf_counter() - start < 2.0


def test_average_fusion_of_a_real_vifb_pair_is_in_published_ranges(vifb_dir):
    vis = cv2.cvtColor(cv2.imread(str(vifb_dir / "vis" / "walking.jpg")), cv2.COLOR_BGR2RGB)
    ir = cv2.cvtColor(cv2.imread(str(vifb_dir / "ir" / "walking.jpg")), cv2.COLOR_BGR2RGB)
    fused = (fm.prepare_image(vis) + fm.prepare_image(ir)) / 2
    text = fm.evaluate_fusion(fused, vis, ir, float_max=255.0)
    vifb = fm.evaluate_fusion(
        fused, vis, ir, preset="vifb", float_max=255.0, metrics=["MI", "PSNR"]
    )
    # Spans reported for classical methods on VIFB/TNO-like data (VIFB paper; CDDFuse, TarDAL
    # tables); they reject convention slips (SF on 0..1, SSIM mean, MI bits vs nats, textbook PSNR).
    ranges = {
        "EN": (5.5, 7.8),
        "SD": (15, 80),
        "SF": (3, 30),
        "AG": (1, 12),
        "VIF": (0.2, 1.5),
        "Qabf": (0.2, 0.8),
        "SSIM": (1.0, 2.0),
        "SCD": (0.3, 2.0),
        "CC": (0.3, 1.0),
        "PSNR": (10, 25),
    }
    for name, (lo, hi) in ranges.items():
        assert lo < text[name] < hi, (name, text[name])
    assert 1.0 < vifb["MI"] < 4.5
    assert 53 < vifb["PSNR"] < 65
    assert text["MI"] == pytest.approx(
        fm.evaluate_fusion(fused, vis, ir, float_max=255.0, metrics=["MI"], mi_unit="nats")["MI"]
        / math.log(2)
    )
