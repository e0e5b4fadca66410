"""Tests for fusion_perception.thermal, .registration and .colour: thermal normalization,
registration, Y/CbCr."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fusion_training.datasets.thermal import build_normalizer

from fusion_perception.colour import merge_fused_luma, rgb_to_ycbcr, to_uint8, ycbcr_to_rgb
from fusion_perception.registration import Registration
from fusion_perception.thermal import (
    SCHEME_VERSIONS,
    ThermalConfig,
    ThermalNormalizer,
    make_normalizer,
    percentiles,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CALIBRATION = REPO / "config" / "calibration_example.yaml"


# ---------------------------------------------------------------- normalization


def test_fixed_range_mono16_exact_values():
    raw = np.array([[0, 1000, 1500], [2000, 3000, 65535]], dtype=np.uint16)
    norm = make_normalizer("fixed_range", lo=1000, hi=3000)
    out = norm(raw)
    assert out.dtype == np.float32
    assert out.shape == (2, 3)
    # (x - 1000) / 2000, clipped to [0, 1]
    np.testing.assert_array_equal(out, np.array([[0.0, 0.0, 0.25], [0.5, 1.0, 1.0]], np.float32))


def test_fixed_range_accepts_big_endian_and_hxwx1():
    raw = np.array([[1000, 2000], [2500, 3000]], dtype=">u2")[:, :, None]
    out = make_normalizer("fixed_range", lo=1000, hi=3000)(raw)
    np.testing.assert_array_equal(out, np.array([[0.0, 0.5], [0.75, 1.0]], np.float32))


def test_fixed_range_32fc1_degrees():
    celsius = np.array([[-20.0, 0.0], [20.0, 60.0]], dtype=np.float32)
    out = make_normalizer("fixed_range", lo=-20.0, hi=60.0)(celsius)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)


def test_fixed_range_no_value_of_the_frame_type_reaches_is_an_error():
    """5000..12000 counts on a mono8 frame would be a blank thermal channel, not an image."""
    counts = make_normalizer("fixed_range", lo=5000, hi=12000)
    with pytest.raises(
        ValueError,
        match=r"^thermal: fixed_range: 5000\.\.12000 maps every uint8 "
        r"value \(0\.\.255\) to 0",
    ):
        counts(np.full((4, 4), 200, np.uint8))
    np.testing.assert_allclose(counts(np.array([[8500]], np.uint16)), [[0.5]])
    below = make_normalizer("fixed_range", lo=-60.0, hi=-10.0)  # degrees, given a mono16 frame
    with pytest.raises(ValueError, match=r"maps every uint16 value .* to 1"):
        below(np.zeros((2, 2), np.uint16))
    np.testing.assert_allclose(below(np.array([[-35.0]], np.float32)), [[0.5]])


def test_scale_8bit_reads_mono8_frames_as_the_training_loaders_do():
    norm = ThermalNormalizer("fixed_range", {"lo": 5000, "hi": 12000}, scale_8bit=True)
    mono8 = np.array([[0, 51], [255, 102]], np.uint8)
    out = norm(mono8[:, :, None])
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, mono8.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(norm(np.array([[8500]], np.uint16)), [[0.5]])  # counts: the scheme


def test_checkpoint_normalization_scales_8bit_frames_only_for_a_range_in_counts():
    def trained(scheme, **params):
        return make_normalizer(scheme, **params).to_dict()

    config = ThermalConfig()  # normalization: checkpoint
    assert config.normalizer(trained("fixed_range", lo=5000, hi=12000)).scale_8bit
    assert not config.normalizer(trained("fixed_range", lo=0, hi=255)).scale_8bit
    assert not config.normalizer(trained("percentile")).scale_8bit
    recorded = ThermalNormalizer.recorded(trained("fixed_range", lo=5000, hi=12000))
    assert recorded.scale_8bit and recorded.fresh_copy().scale_8bit
    # a dataset's spec reads 8-bit frames the same way however it is spelled
    for spec in (
        trained("fixed_range", lo=5000, hi=12000),
        {"scheme": "fixed_range", "lo": 5000, "hi": 12000},
        {"scheme": "fixed_range", "params": {"lo": 5000, "hi": 12000}},
    ):
        np.testing.assert_allclose(build_normalizer(spec)(np.array([[51]], np.uint8)), [[0.2]])
    explicit = ThermalConfig(normalization="fixed_range", range_lo=5000, range_hi=12000)
    with pytest.raises(ValueError, match="maps every uint8 value"):
        explicit.normalizer()(np.zeros((2, 2), np.uint8))


def test_minmax_uint8_and_flat_frame():
    mono8 = np.array([[10, 60], [110, 210]], dtype=np.uint8)
    out = make_normalizer("minmax")(mono8)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)
    flat = np.full((4, 5), 77, np.uint8)
    np.testing.assert_array_equal(make_normalizer("minmax")(flat), np.zeros((4, 5), np.float32))


def test_percentile_bounds_exact_on_ramp():
    # 100 pixels 1000..1099: linear percentile p sits at index p/100 * 99 -> 10% = 1009.9,
    # 90% = 1089.1.
    raw = (1000 + np.arange(100, dtype=np.uint16)).reshape(10, 10)
    norm = make_normalizer("percentile", p_lo=10, p_hi=90, ema=0.5)
    out = norm(raw)
    lo, hi = norm.bounds
    assert lo == pytest.approx(1009.9)
    assert hi == pytest.approx(1089.1)
    np.testing.assert_allclose(out[5, 0], (1050 - 1009.9) / (1089.1 - 1009.9), rtol=1e-5)
    assert out.min() == 0.0
    assert out.max() == 1.0
    assert np.count_nonzero(out == 0.0) == 10  # 1000..1009 are below the lower bound


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_percentiles_equal_numpys(dtype):
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    for size in (1, 2, 9, 1000, 40_000):
        sample = rng.integers(0, top, size, endpoint=True).astype(dtype)
        for q in ([1, 99], [0, 100], [50, 50], [2.5, 97.5]):
            np.testing.assert_allclose(
                percentiles(sample, q), np.percentile(sample, q), rtol=0, atol=1e-9
            )
    floats = rng.random(500).astype(np.float32)
    np.testing.assert_array_equal(percentiles(floats, [5, 95]), np.percentile(floats, [5, 95]))


def test_percentile_scheme_does_not_touch_the_callers_frame():
    raw = (1000 + np.arange(100, dtype=np.uint16)).reshape(10, 10)
    before = raw.copy()
    make_normalizer("percentile")(raw)
    np.testing.assert_array_equal(raw, before)


def test_percentile_ema_damps_flickering_hot_spot():
    ema = 0.8
    norm = make_normalizer("percentile", p_lo=0, p_hi=100, ema=ema)
    base = np.full((8, 8), 7000, np.uint16)
    base[0, 0] = 6000
    base[7, 7] = 8000
    hot = base.copy()
    hot[3, 3] = 18000  # a hot pixel that appears in a single frame
    norm(base)
    assert norm.bounds == (6000.0, 8000.0)
    out_hot = norm(hot)
    # the upper bound moves only (1 - ema) of the jump: 8000 + 0.2 * 10000 = 10000
    assert norm.bounds == pytest.approx((6000.0, 10000.0))
    assert out_hot[7, 7] == pytest.approx((8000 - 6000) / (10000 - 6000))
    norm(base)
    # and decays back geometrically: 0.8 * 10000 + 0.2 * 8000 = 9600
    assert norm.bounds == pytest.approx((6000.0, 9600.0))

    undamped = make_normalizer("percentile", p_lo=0, p_hi=100, ema=0.0)
    undamped(base)
    flicker = undamped(hot)
    assert undamped.bounds == (6000.0, 18000.0)
    # background brightness jumps less with the EMA than without it
    steady = make_normalizer("minmax")(base)[7, 7]
    assert abs(out_hot[7, 7] - steady) < abs(flicker[7, 7] - steady)


def test_percentile_reset_and_dtype_change():
    norm = make_normalizer("percentile", p_lo=0, p_hi=100, ema=0.9)
    norm(np.array([[0, 100]], np.uint16))
    with pytest.raises(ValueError, match="reset"):
        norm(np.array([[0.0, 30.0]], np.float32))
    norm.reset()
    assert norm.bounds is None
    norm(np.array([[10.0, 30.0]], np.float32))
    assert norm.bounds == (10.0, 30.0)


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A 32FC1 frame of 20..30 degrees."""
    return (20.0 + 10.0 * rng.random((48, 64))).astype(np.float32)


def _glitch(frame: np.ndarray) -> np.ndarray:
    """A driver glitch: finite but absurd values (+-3e38) over the whole frame."""
    out = frame.copy()
    out[: frame.shape[0] // 2] = 3e38
    out[frame.shape[0] // 2 :] = -3e38
    return out


def test_percentile_ignores_a_glitch_frame_of_huge_finite_values():
    rng = np.random.default_rng(0)
    norm = make_normalizer("percentile")  # ema 0.9: without the guard ~800 frames to recover
    for _ in range(5):
        norm(_scene(rng))
    steady = norm.bounds
    glitch = norm(_glitch(_scene(rng)))
    assert np.isfinite(glitch).all() and glitch.min() == 0.0 and glitch.max() == 1.0
    assert norm.bounds == steady and norm.outlier_frames == 1
    frame = _scene(rng)
    out = norm(frame)
    assert norm.bounds == pytest.approx(steady, abs=0.2)
    assert np.abs(out - make_normalizer("minmax")(frame)).mean() < 0.05


def test_percentile_recovers_within_a_few_frames_when_the_first_frame_is_a_glitch():
    rng = np.random.default_rng(1)
    norm = make_normalizer("percentile")
    first = norm(_glitch(_scene(rng)))
    assert np.isfinite(first).all()  # float32 would give inf/inf = NaN here
    outputs = [norm(_scene(rng)) for _ in range(3)]
    lo, hi = norm.bounds
    assert 20.0 <= lo < hi <= 30.0  # the third normal frame restarted the bounds
    assert 0.3 < float(outputs[-1].mean()) < 0.7
    assert norm.outlier_frames == 3


def test_percentile_takes_over_a_real_range_change_after_a_few_frames():
    norm = make_normalizer("percentile", p_lo=0, p_hi=100, ema=0.9)
    narrow = np.linspace(7000, 7020, 64, dtype=np.float32).reshape(8, 8).astype(np.uint16)
    wide = np.linspace(2000, 30000, 64).reshape(8, 8).astype(np.uint16)  # 1400x the span
    norm(narrow)
    assert norm.bounds == (7000.0, 7020.0)
    norm(wide)
    norm(wide)
    assert norm.bounds == (7000.0, 7020.0)  # could still be a glitch
    norm(wide)
    assert norm.bounds == (2000.0, 30000.0)  # three in a row: the scene changed
    norm(wide)
    assert norm.bounds == (2000.0, 30000.0)  # and the EMA goes on from there


def test_minmax_of_huge_finite_values_stays_finite():
    out = make_normalizer("minmax")(np.array([[-3e38, 0.0, 3e38]], np.float32))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]], atol=1e-6)


def test_state_dtype_follows_the_percentile_state():
    norm = make_normalizer("percentile")
    assert norm.state_dtype is None
    norm(np.array([[0, 100]], np.uint16))
    assert norm.state_dtype == np.uint16
    norm.reset()
    assert norm.state_dtype is None


def test_nan_rejected_by_default_and_replaced_on_request():
    img = np.array([[20.0, np.nan], [30.0, np.inf]], np.float32)
    with pytest.raises(ValueError, match=r"2 non-finite .*nonfinite_fill"):
        make_normalizer("minmax")(img)
    out = make_normalizer("minmax", nonfinite_fill=0.0)(img)
    np.testing.assert_array_equal(out, np.array([[0.0, 0.0], [1.0, 0.0]], np.float32))
    with pytest.raises(ValueError, match="no finite pixel"):
        make_normalizer("minmax", nonfinite_fill=0.0)(np.full((2, 2), np.nan, np.float32))


@pytest.mark.parametrize(
    ("image", "exc", "match"),
    [
        (np.zeros((0, 4), np.uint16), ValueError, "empty"),
        (np.zeros((2, 3, 3), np.uint16), ValueError, "HxW"),
        (np.zeros((2, 3), np.int32), TypeError, "int32"),
        ([[1, 2]], TypeError, "list"),
    ],
)
def test_bad_thermal_input_raises(image, exc, match):
    with pytest.raises(exc, match=match):
        make_normalizer("minmax")(image)


@pytest.mark.parametrize(
    ("scheme", "params", "match"),
    [
        ("clahe", {}, "unknown thermal normalization scheme 'clahe'"),
        ("fixed_range", {"lo": 1.0}, "requires parameter 'hi'"),
        ("fixed_range", {"lo": 5, "hi": 5}, "'hi'"),
        ("percentile", {"ema": 1.0}, "'ema'"),
        ("percentile", {"p_lo": 50, "p_hi": 40}, "p_lo=50.0"),
        ("percentile", {"gain": 2}, r"unknown parameter\(s\) \['gain'\]"),
        ("minmax", {"nonfinite_fill": 2.0}, "nonfinite_fill"),
        ("fixed_range", {"lo": "0", "hi": 1}, "'lo'"),
    ],
)
def test_bad_scheme_or_params_raise(scheme, params, match):
    with pytest.raises(ValueError, match=match):
        make_normalizer(scheme, **params)


def test_to_dict_round_trip_and_version_check():
    norm = make_normalizer("percentile", p_lo=2, p_hi=98, ema=0.75)
    d = norm.to_dict()
    assert d == {
        "scheme": "percentile",
        "version": SCHEME_VERSIONS["percentile"],
        "params": {"p_lo": 2.0, "p_hi": 98.0, "ema": 0.75, "nonfinite_fill": None},
    }
    rebuilt = ThermalNormalizer.from_dict(yaml.safe_load(yaml.safe_dump(d)))
    frame = (np.arange(64, dtype=np.uint16) * 37).reshape(8, 8)
    np.testing.assert_array_equal(rebuilt(frame), norm(frame))
    with pytest.raises(ValueError, match="version 99"):
        ThermalNormalizer.from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="exactly the keys"):
        ThermalNormalizer.from_dict({"scheme": "minmax", "params": {}})


# ---------------------------------------------------------------- registration


def test_registration_integer_shift_is_exact():
    rng = np.random.default_rng(0)
    thermal = rng.integers(1, 65535, size=(30, 40), dtype=np.uint16)
    reg = Registration([[1, 0, 7], [0, 1, 3], [0, 0, 1]], rgb_size=(64, 48), thermal_size=(40, 30))
    out, mask = reg.warp(thermal)
    assert out.shape == (48, 64)
    assert out.dtype == np.uint16
    assert mask.dtype == bool
    assert mask.shape == (48, 64)
    expected_mask = np.zeros((48, 64), bool)
    expected_mask[3:33, 7:47] = True
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(out[3:33, 7:47], thermal)
    assert not out[~mask].any()


def test_registration_scale_and_shift_lands_where_expected():
    # thermal 32x24 scaled x2 and shifted by (10, 6) into an 80x60 RGB frame
    thermal = np.zeros((24, 32), np.float32)
    thermal[4:8, 5:9] = 1.0  # hot block, thermal x 5..8, y 4..7
    reg = Registration([[2, 0, 10], [0, 2, 6], [0, 0, 1]], rgb_size=(80, 60), thermal_size=(32, 24))
    out, mask = reg.warp(thermal)
    # valid where 0 <= (x - 10) / 2 <= 31 and 0 <= (y - 6) / 2 <= 23
    expected_mask = np.zeros((60, 80), bool)
    expected_mask[6:53, 10:73] = True
    np.testing.assert_array_equal(mask, expected_mask)
    # the block's inside maps to x 2*5+10=20 .. 2*8+10=26, y 2*4+6=14 .. 2*7+6=20
    np.testing.assert_allclose(out[14:21, 20:27], 1.0)
    ys, xs = np.nonzero(out > 0.99)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 26, 14, 20)
    # bilinear half-way values on the block's edge, zero far away and outside the mask
    assert out[14, 19] == pytest.approx(0.5, abs=1 / 32)
    assert out[30, 50] == 0.0
    assert not out[~mask].any()


def test_registration_mask_matches_opencv_point_mapping():
    h = np.array([[0.9, 0.05, 12.0], [-0.04, 1.1, 5.0], [1e-4, -2e-4, 1.0]])
    reg = Registration(h, rgb_size=(96, 72), thermal_size=(64, 48))
    _, mask = reg.warp(np.ones((48, 64), np.uint8))
    ys, xs = np.mgrid[0:72, 0:96]
    dst = np.stack([xs, ys], -1).reshape(-1, 1, 2).astype(np.float64)
    src = cv2.perspectiveTransform(dst, np.linalg.inv(h)).reshape(72, 96, 2)
    inside = (src[..., 0] >= 0) & (src[..., 0] <= 63) & (src[..., 1] >= 0) & (src[..., 1] <= 47)
    # identical except possibly within OpenCV's 1/64 px rounding of the edge
    strict = (src[..., 0] >= 1 / 64) & (src[..., 0] <= 63 - 1 / 64)
    strict &= (src[..., 1] >= 1 / 64) & (src[..., 1] <= 47 - 1 / 64)
    assert np.all(mask[strict])
    assert not np.any(mask & ~inside & ~_near_edge(src, 63, 47))
    assert 0.3 < mask.mean() < 0.9


def _near_edge(src, max_x, max_y, tol=1 / 64):
    x, y = src[..., 0], src[..., 1]
    return (
        (np.abs(x) <= tol)
        | (np.abs(x - max_x) <= tol)
        | (np.abs(y) <= tol)
        | (np.abs(y - max_y) <= tol)
    )


def test_registration_identity_and_wrong_size():
    reg = Registration.identity((40, 30))
    assert reg.is_identity
    img = np.arange(1200, dtype=np.float32).reshape(30, 40)
    out, mask = reg.warp(img)
    np.testing.assert_array_equal(out, img)
    assert mask.all()
    with pytest.raises(ValueError, match=r"\(41, 30\).*\(40, 30\)"):
        reg.warp(np.zeros((30, 41), np.float32))


def test_example_calibration_yaml_loads_and_round_trips():
    reg = Registration.from_yaml(EXAMPLE_CALIBRATION)
    assert reg.rgb_size == (1280, 720)
    assert reg.thermal_size == (640, 512)
    again = Registration.from_dict(reg.to_dict())
    np.testing.assert_array_equal(again.homography, reg.homography)
    out, mask = reg.warp(np.ones((512, 640), np.uint8))
    assert out.shape == (720, 1280)
    assert mask.sum() == out.sum()


_GOOD = {"homography": np.eye(3).tolist(), "rgb_size": [8, 6], "thermal_size": [8, 6]}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"homography": None}, "missing key 'homography'"),
        ({"rgb_size": None}, "missing key 'rgb_size'"),
        ({"thermal_size": None}, "missing key 'thermal_size'"),
        ({"homography": [[1, 0], [0, 1]]}, "'homography' must be 3x3"),
        ({"homography": [[1, 0, 0], [0, 1, 0], [0, 0, 0]]}, "'homography' is singular"),
        ({"homography": [[1, 0, 0], [0, "x", 0], [0, 0, 1]]}, "'homography' must be numbers"),
        ({"rgb_size": [640]}, "'rgb_size' must be"),
        ({"thermal_size": [640, 0]}, "'thermal_size' must be"),
        ({"thermal_size": [640.0, 512.0]}, "'thermal_size' must be"),
        ({"homograpy": [[1]]}, r"unknown key\(s\) \['homograpy'\]"),
    ],
)
def test_calibration_errors_name_the_key(change, match, tmp_path):
    data = {k: v for k, v in {**_GOOD, **change}.items() if v is not None}
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=match):
        Registration.from_yaml(path)


def test_calibration_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Registration.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("homography: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        Registration.from_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        Registration.from_yaml(bad)


# ---------------------------------------------------------------- colour


def test_ycbcr_known_values():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]], np.uint8)
    ycc = rgb_to_ycbcr(rgb)
    # BT.601 full range: white (255,128,128), black (0,128,128),
    # red Y=0.299*255=76.2 Cb=128-0.168736*255=85.0 Cr=255.5->255,
    # blue Y=29.1 Cb=255.5->255 Cr=128-0.081312*255=107.3
    np.testing.assert_array_equal(
        ycc[0], [[255, 128, 128], [0, 128, 128], [76, 85, 255], [29, 255, 107]]
    )


def test_ycbcr_round_trip_uint8_max_error_1():
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b], -1).reshape(-1, levels.size, 3)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_ycbcr_round_trip_float():
    rng = np.random.default_rng(1)
    rgb = rng.random((16, 16, 3), dtype=np.float32)
    ycc = rgb_to_ycbcr(rgb)
    assert ycc.dtype == np.float32
    np.testing.assert_allclose(ycbcr_to_rgb(ycc), rgb, atol=1e-5)


def test_merge_fused_luma_with_source_luma_returns_rgb():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    luma = rgb_to_ycbcr(rgb.astype(np.float32) / 255)[:, :, 0]
    out = merge_fused_luma(luma, rgb)
    assert out.dtype == np.uint8
    assert out.shape == rgb.shape
    # Chroma is kept in 8 bits between the two conversions: at most 2 grey levels of error.
    error = np.abs(out.astype(int) - rgb.astype(int))
    assert error.max() <= 2 and error.mean() < 0.6


def test_merge_fused_luma_takes_uint8_luma_and_gives_either_channel_order():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    luma = rng.integers(0, 256, size=(24, 32), dtype=np.uint8)
    from_u8 = merge_fused_luma(luma, rgb)
    from_float = merge_fused_luma(luma.astype(np.float32) / 255.0, rgb)
    np.testing.assert_array_equal(from_u8, from_float)
    np.testing.assert_array_equal(merge_fused_luma(luma, rgb, order="bgr"), from_u8[:, :, ::-1])
    out_y = rgb_to_ycbcr(from_u8)[:, :, 0].astype(int)
    unclipped = (from_u8.max(axis=2) < 255) & (from_u8.min(axis=2) > 0)
    assert np.abs(out_y - luma.astype(int))[unclipped].max() <= 1
    with pytest.raises(ValueError, match="order"):
        merge_fused_luma(luma, rgb, order="yuv")
    with pytest.raises(ValueError, match="uint8 when it is an integer"):
        merge_fused_luma(luma.astype(np.uint16), rgb)


def test_merge_fused_luma_rejects_bad_input():
    rgb = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        merge_fused_luma(np.zeros((4, 5), np.float32), rgb)
    with pytest.raises(ValueError, match="range"):
        merge_fused_luma(np.full((4, 4), 1.5, np.float32), rgb)
    with pytest.raises(ValueError, match="NaN"):
        merge_fused_luma(np.full((4, 4), np.nan, np.float32), rgb)
    with pytest.raises(TypeError, match="uint8"):
        merge_fused_luma(np.zeros((4, 4), np.float32), rgb.astype(np.float32))


def test_to_uint8():
    np.testing.assert_array_equal(
        to_uint8(np.array([0.0, 0.5, 1.0, 1.2, -0.1], np.float32)), [0, 128, 255, 255, 0]
    )


# ---------------------------------------------------------------- real VIFB pair


def _vifb_pair(vifb_dir, name="carLight"):
    vis = cv2.imread(str(vifb_dir / "vis" / f"{name}.jpg"), cv2.IMREAD_COLOR)
    ir = cv2.imread(str(vifb_dir / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    assert vis is not None
    assert ir is not None
    return cv2.cvtColor(vis, cv2.COLOR_BGR2RGB), ir


def test_vifb_normalize_and_merge(vifb_dir):
    rgb, ir = _vifb_pair(vifb_dir)
    assert ir.shape == rgb.shape[:2]
    # the same scene as a 14-bit-like mono16 stream (affine in counts) normalizes identically
    # to the mono8 one under percentile AGC, and is monotonic in the raw values
    counts = (ir.astype(np.uint16) * 40 + 7000).astype(np.uint16)
    from8 = make_normalizer("percentile", p_lo=1, p_hi=99, ema=0.9)(ir)
    from16 = make_normalizer("percentile", p_lo=1, p_hi=99, ema=0.9)(counts)
    np.testing.assert_allclose(from16, from8, atol=1e-5)
    assert 0.0 <= from8.min() < 0.05
    assert 0.95 < from8.max() <= 1.0
    order = np.argsort(ir.ravel(), kind="stable")
    assert np.all(np.diff(from8.ravel()[order]) >= 0)

    # fused = normalized thermal as luma: output luma follows thermal, chroma follows visible
    fused = merge_fused_luma(from8, rgb)
    out_ycc = rgb_to_ycbcr(fused).astype(int)
    vis_ycc = rgb_to_ycbcr(rgb).astype(int)
    luma_err = np.abs(out_ycc[:, :, 0] - np.rint(from8 * 255).astype(int))
    assert np.median(luma_err) <= 1
    chroma_err = np.abs(out_ycc[:, :, 1:] - vis_ycc[:, :, 1:])
    assert np.median(chroma_err) <= 1
