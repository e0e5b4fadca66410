"""Image-fusion quality metrics with every convention made explicit.

The same fused image scores very differently under the scripts fusion papers use (bits vs nats,
sum vs mean, 0..1 vs 0..255, buggy PSNR variants; fusion_anchors.md §2). Each metric is implemented
once here; each convention difference is a named field of `MetricConfig`; `PRESETS` reproduce the
common suites; `evaluate_fusion` is the entry point.

Notation: A = infrared, B = visible, F = fused. Metric functions take float64 greyscale HxW arrays
on the 0..255 intensity scale (see `prepare_image`). Pairwise similarity metrics are reported over both
sources (X(A,F) + X(B,F)); CC and the error-like CE and RMSE are the mean over the two sources.
Colour images are scored on their BT.601 luma by default, or channel by channel (`colour`, as VIFB
does). Undefined values (e.g. a correlation with a constant image) are NaN; a zero-error PSNR is +inf.
Only numpy and OpenCV are used; all metrics together take well under a second on a 640x512 image
(about 1 s when an RGB image is scored per channel).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

METRIC_NAMES = (
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "VIF",
    "Qabf",
    "SSIM",
    "SCD",
    "CC",
    "PSNR",
    "RMSE",
    "CE",
    "EI",
    "Qcb",
    "Qcv",
)

_LUMA_RGB = np.array(
    [0.299, 0.587, 0.114]
)  # ITU-R BT.601 luma, as cv2 RGB2GRAY and MATLAB rgb2gray
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


@dataclass(frozen=True)
class MetricConfig:
    """Convention switches; the defaults are the textbook definitions (fusion_anchors.md §2).

    colour: how an RGB fused image is scored. "luma": every RGB input becomes BT.601 luma first.
        "per_channel" (VIFB): each metric is computed on channel k of F against channel k of each
        RGB source (a greyscale source is used for every channel) and the three values are
        averaged. A greyscale fused image is always scored against the sources' luma.
    en_quantize: how non-integer intensities fall into the 256 bins of EN and CE
        ("round" | "floor").
    sf_norm: SF mean over the valid differences ("valid") or divided by M*N ("MN", VIFB).
    sf_channels: SF of an RGB F under colour="per_channel": "mean" of the three channel SFs, or
        "tiled" (VIFB): one SF of the M x 3N image that puts the channels side by side (what
        MATLAB's [m,n] = size(F) and F(i,j) indexing do to an M x N x 3 array), which pools the
        channels' squared differences and counts the two seams between channels.
    sf_range: intensity range SF is computed on (255.0; Tang's MATLAB uses 0..1, i.e. 1.0).
    ag_gradient: "central" (MATLAB/np.gradient, one-sided at borders) or "forward" differences.
    ag_norm: divide the AG sum by (M-1)(N-1) ("(M-1)(N-1)") or by M*N ("MN").
    mi_unit: "bits" (log2) or "nats" (ln).
    mi_hist: "raw" (round to 0..255) or "minmax" (stretch each image to 0..255 first, VIFB).
    mi_bins: number of histogram bins per image (256).
    mi_normalize: "none" (MI(A,F)+MI(B,F)), "hossny" (2[MI_A/(H_A+H_F) + MI_B/(H_B+H_F)]) or
        "nmi" (IVIF_ZOO NMI: 2(MI_A+MI_B)/(H_A+H_B)).
    vif_border: "valid" filtering (Sheikh-Bovik LIVE code) or "same" zero padding (IVIF_ZOO).
    vif_kernel: "centred" Gaussian grid (MATLAB fspecial) or "ivif_zoo_grid"
        (linspace(floor(-N/2), N//2, N), half a pixel off centre, as IVIF_ZOO's torch port).
    qabf_equal_ratio: edge-strength ratio where g_X == g_F: "one" (textbook) or "g_fused" (the
        quirk every public Qabf script shares: the ratio is set to g_F there).
    ssim_window: "gaussian" (Wang 2004) or "uniform" (skimage default).
    ssim_win_size, ssim_sigma: window size (odd) and Gaussian sigma.
    ssim_data_range: L in C1 = (0.01 L)^2, C2 = (0.03 L)^2.
    ssim_covariance: "population" (Wang) or "sample" (skimage default, N/(N-1)).
    ssim_reduce: "sum" (SSIM(A,F)+SSIM(B,F)) or "mean".
    psnr_mse: "standard" (MSE on 0..255), "unit_scale" (MSE on 0..1 but peak 255: +48.13 dB;
        Tang MATLAB, IVIF_ZOO) or "vifb_sqrt" (VIFB's sqrt(SSE)/(MN) "MSE").
    psnr_peak: "255" or "max_fused" (CDDFuse: max(F)).
    cc_reduce: "mean" or "sum" of r(A,F) and r(B,F).
    rmse_norm: RMSE(X,F) as "standard" sqrt(SSE/(MN)) or "vifb_sqrt" sqrt(SSE)/(MN) (VIFB's
        value is the textbook one divided by sqrt(MN)); RMSE is the mean over both sources.
    qc_stretch: Qcb/Qcv first min-max stretch each image to 0..255: "exact", or "round" to integer
        levels (Z. Liu's reference code, which VIFB runs; ties at .5 make it fragile for float
        inputs, so it is not the default).
    qcv_window: Chen-Varshney region size (square blocks; partial blocks at the right and bottom
        are zero-padded to full size, as MATLAB blkproc does).
    qcv_alpha: Chen-Varshney saliency exponent (region weight = sum of Sobel magnitude^alpha).
    """

    colour: str = "luma"
    en_quantize: str = "round"
    sf_norm: str = "valid"
    sf_channels: str = "mean"
    sf_range: float = 255.0
    ag_gradient: str = "central"
    ag_norm: str = "(M-1)(N-1)"
    mi_unit: str = "bits"
    mi_hist: str = "raw"
    mi_bins: int = 256
    mi_normalize: str = "none"
    vif_border: str = "valid"
    vif_kernel: str = "centred"
    qabf_equal_ratio: str = "one"
    ssim_window: str = "gaussian"
    ssim_win_size: int = 11
    ssim_sigma: float = 1.5
    ssim_data_range: float = 255.0
    ssim_covariance: str = "population"
    ssim_reduce: str = "sum"
    psnr_mse: str = "standard"
    psnr_peak: str = "255"
    cc_reduce: str = "mean"
    rmse_norm: str = "standard"
    qc_stretch: str = "exact"
    qcv_window: int = 16
    qcv_alpha: float = 5.0

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"MetricConfig.{name}={value!r}; must be one of {allowed}")
        if not self.sf_range > 0:
            raise ValueError(f"MetricConfig.sf_range={self.sf_range!r}; must be > 0")
        if not (isinstance(self.mi_bins, int) and 2 <= self.mi_bins <= 256):
            raise ValueError(f"MetricConfig.mi_bins={self.mi_bins!r}; must be an int in [2, 256]")
        if not (isinstance(self.ssim_win_size, int) and self.ssim_win_size % 2 == 1):
            raise ValueError(f"MetricConfig.ssim_win_size={self.ssim_win_size!r}; must be odd")
        if not (self.ssim_sigma > 0 and self.ssim_data_range > 0):
            raise ValueError(
                f"MetricConfig.ssim_sigma={self.ssim_sigma!r} and ssim_data_range="
                f"{self.ssim_data_range!r} must both be > 0"
            )
        if not (isinstance(self.qcv_window, int) and self.qcv_window >= 2):
            raise ValueError(f"MetricConfig.qcv_window={self.qcv_window!r}; must be an int >= 2")
        if not self.qcv_alpha > 0:
            raise ValueError(f"MetricConfig.qcv_alpha={self.qcv_alpha!r}; must be > 0")


_CHOICES: dict[str, tuple[str, ...]] = {
    "colour": ("luma", "per_channel"),
    "en_quantize": ("round", "floor"),
    "sf_norm": ("valid", "MN"),
    "sf_channels": ("mean", "tiled"),
    "ag_gradient": ("central", "forward"),
    "ag_norm": ("(M-1)(N-1)", "MN"),
    "mi_unit": ("bits", "nats"),
    "mi_hist": ("raw", "minmax"),
    "mi_normalize": ("none", "hossny", "nmi"),
    "vif_border": ("valid", "same"),
    "vif_kernel": ("centred", "ivif_zoo_grid"),
    "qabf_equal_ratio": ("one", "g_fused"),
    "ssim_window": ("gaussian", "uniform"),
    "ssim_covariance": ("population", "sample"),
    "ssim_reduce": ("sum", "mean"),
    "psnr_mse": ("standard", "unit_scale", "vifb_sqrt"),
    "psnr_peak": ("255", "max_fused"),
    "cc_reduce": ("mean", "sum"),
    "rmse_norm": ("standard", "vifb_sqrt"),
    "qc_stretch": ("exact", "round"),
}

# Suites, as read in their code (fusion_anchors.md §2). A suite that lacks a metric (VIFB has no
# VIF/SCD/CC) gets the textbook convention for it.
PRESETS: dict[str, MetricConfig] = {
    "textbook": MetricConfig(),
    # VIFB MATLAB toolbox (metrics/*.m): colour scored channel by channel and averaged, floor
    # EN/CE bins, SF/MN on the channels tiled side by side, MI in nats on min-max stretched
    # images, Wang SSIM summed, PSNR and RMSE from sqrt(SSE)/(MN) (PSNR ~60 dB). Reproduces
    # VIFB's published per-image values (test/test_vifb_reproduction.py).
    "vifb": MetricConfig(
        colour="per_channel",
        en_quantize="floor",
        sf_norm="MN",
        sf_channels="tiled",
        mi_unit="nats",
        mi_hist="minmax",
        qabf_equal_ratio="g_fused",
        psnr_mse="vifb_sqrt",
        rmse_norm="vifb_sqrt",
        qc_stretch="round",
    ),
    # CDDFuse Evaluator (Python): AG/MN, sklearn MI (nats), skimage SSIM defaults on float 0..255
    # arrays (7x7 uniform, sample covariance, data_range inferred as 2 by skimage <= 0.19),
    # PSNR peak max(F).
    "cddfuse": MetricConfig(
        ag_norm="MN",
        mi_unit="nats",
        qabf_equal_ratio="g_fused",
        ssim_window="uniform",
        ssim_win_size=7,
        ssim_data_range=2.0,
        ssim_covariance="sample",
        psnr_peak="max_fused",
    ),
    # Tang's MATLAB evaluation: SF on im2double (0..1) images, MI in bits, PSNR +48.13 dB.
    "tang": MetricConfig(sf_range=1.0, qabf_equal_ratio="g_fused", psnr_mse="unit_scale"),
    # IVIF_ZOO (torch/numpy): AG/MN, MI in bits, VIF with 'same' zero padding and its shifted
    # Gaussian grid, Wang SSIM summed, PSNR +48.13 dB.
    "ivif_zoo": MetricConfig(
        ag_norm="MN",
        vif_border="same",
        vif_kernel="ivif_zoo_grid",
        qabf_equal_ratio="g_fused",
        psnr_mse="unit_scale",
    ),
}

# Metrics a suite reports under the same name but with a different definition we do not implement.
PRESET_UNSUPPORTED: dict[str, dict[str, str]] = {
    "tang": {
        "SSIM": "Tang's suite reports MEF-SSIM (Ma et al. 2015), a different metric that this module "
        "does not implement; use preset 'ivif_zoo' or 'textbook' for Wang SSIM",
    },
}


def prepare_image(img: np.ndarray, name: str = "image", float_max: float = 1.0) -> np.ndarray:
    """Return `img` as float64 greyscale HxW on the 0..255 scale.

    uint8 HxW (or HxWx1) is used as is. Float images are taken to lie in [0, float_max] (the
    library's float convention is [0, 1]; pass 255.0 for float images on 0..255) and are scaled by
    255/float_max; values outside that range raise. RGB HxWx3 (library order, not BGR) becomes BT.601
    luma Y = 0.299 R + 0.587 G + 0.114 B, rounded to the nearest level for uint8 inputs (as
    cv2.cvtColor(RGB2GRAY) and MATLAB rgb2gray do; their fixed-point arithmetic agrees within one
    level) and left unrounded for float inputs.
    """
    out = _scaled(img, name, float_max)
    if out.ndim == 3:
        out = out @ _LUMA_RGB
        if img.dtype == np.uint8:
            out = np.floor(out + 0.5)
    return out


def prepare_channels(
    img: np.ndarray, name: str = "image", float_max: float = 1.0
) -> list[np.ndarray]:
    """Return the planes of `img` as float64 HxW arrays on the 0..255 scale, unconverted.

    One plane for a greyscale image, three (R, G, B) for an RGB one; scaling and checks as in
    `prepare_image`.
    """
    out = _scaled(img, name, float_max)
    return [out] if out.ndim == 2 else [out[:, :, k] for k in range(3)]


def _scaled(img: np.ndarray, name: str, float_max: float) -> np.ndarray:
    """Validate `img` and return it as float64 on the 0..255 scale (HxW or HxWx3)."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name} must be HxW, HxWx1 or HxWx3 (RGB), got shape {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float, got dtype {img.dtype}")
    if not float_max > 0:
        raise ValueError(f"float_max must be > 0, got {float_max!r}")
    out = img.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(out.min()), float(out.max())
    tol = 1e-6 * float_max
    if lo < -tol or hi > float_max + tol:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, float_max={float_max}]; "
            "pass float_max=255.0 for float images on the 0..255 scale"
        )
    return np.clip(out, 0.0, float_max) * (255.0 / float_max)


def _check_pair(x: np.ndarray, f: np.ndarray, names: str = "x, f") -> None:
    if x.ndim != 2 or x.shape != f.shape:
        raise ValueError(f"{names} must be HxW arrays of one shape, got {x.shape} and {f.shape}")


def _entropy(counts: np.ndarray, log: Callable[[np.ndarray], np.ndarray] = np.log2) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


def _levels(x: np.ndarray, quantize: str) -> np.ndarray:
    q = np.floor(x + 0.5) if quantize == "round" else np.floor(x)
    return np.clip(q, 0, 255).astype(np.intp).ravel()


def entropy(f: np.ndarray, quantize: str = "round") -> float:
    """EN = -sum_l p_l log2 p_l over a 256-bin histogram of F (0..255, clipped)."""
    return _entropy(np.bincount(_levels(f, quantize), minlength=256))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation of F."""
    return float(f.std())


def spatial_frequency(f: np.ndarray, norm: str = "valid", value_range: float = 255.0) -> float:
    """SF = sqrt(RF^2 + CF^2) from horizontal (RF) and vertical (CF) first differences."""
    dh = np.diff(f, axis=1)
    dv = np.diff(f, axis=0)
    if norm == "valid":
        rf2, cf2 = np.mean(dh * dh), np.mean(dv * dv)
    else:
        rf2, cf2 = np.sum(dh * dh) / f.size, np.sum(dv * dv) / f.size
    return float(math.sqrt(rf2 + cf2) * value_range / 255.0)


def average_gradient(f: np.ndarray, gradient: str = "central", norm: str = "(M-1)(N-1)") -> float:
    """AG = sum sqrt((Gx^2 + Gy^2)/2) / norm, with central (MATLAB `gradient`) or forward Gx, Gy."""
    m, n = f.shape
    if gradient == "central":
        gy, gx = np.gradient(f)
    else:
        gx = f[:-1, 1:] - f[:-1, :-1]
        gy = f[1:, :-1] - f[:-1, :-1]
    total = np.sqrt((gx * gx + gy * gy) / 2.0).sum()
    return float(total / ((m - 1) * (n - 1) if norm == "(M-1)(N-1)" else m * n))


def _mi_levels(x: np.ndarray, bins: int, hist: str) -> np.ndarray:
    if hist == "minmax":
        lo, hi = x.min(), x.max()
        unit = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        return np.floor(unit * (bins - 1) + 0.5).astype(np.intp).ravel()
    q = np.clip(np.floor(x + 0.5), 0, 255)
    return (q * bins // 256).astype(np.intp).ravel()


def _mi_terms(
    x: np.ndarray, f: np.ndarray, unit: str, hist: str, bins: int
) -> tuple[float, float, float]:
    """Return (MI(X,F), H(X), H(F)) from a bins x bins joint histogram."""
    log = np.log2 if unit == "bits" else np.log
    ix, jf = _mi_levels(x, bins, hist), _mi_levels(f, bins, hist)
    joint = np.bincount(ix * bins + jf, minlength=bins * bins)
    hx = _entropy(np.bincount(ix, minlength=bins), log)
    hf = _entropy(np.bincount(jf, minlength=bins), log)
    return hx + hf - _entropy(joint, log), hx, hf


def mutual_information(
    x: np.ndarray, f: np.ndarray, unit: str = "bits", hist: str = "raw", bins: int = 256
) -> float:
    """MI(X,F) = H(X) + H(F) - H(X,F) from a joint histogram (Qu et al. 2002)."""
    _check_pair(x, f)
    return _mi_terms(x, f, unit, hist, bins)[0]


def fusion_mutual_information(
    f: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: MetricConfig = PRESETS["textbook"]
) -> float:
    """MI(A,F) + MI(B,F), or the normalised variant `cfg.mi_normalize` names."""
    mi_a, h_a, h_fa = _mi_terms(a, f, cfg.mi_unit, cfg.mi_hist, cfg.mi_bins)
    mi_b, h_b, h_fb = _mi_terms(b, f, cfg.mi_unit, cfg.mi_hist, cfg.mi_bins)
    if cfg.mi_normalize == "none":
        return mi_a + mi_b
    if cfg.mi_normalize == "hossny":
        return 2.0 * (_ratio(mi_a, h_a + h_fa) + _ratio(mi_b, h_b + h_fb))
    return 2.0 * _ratio(mi_a + mi_b, h_a + h_b)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _gauss_1d(size: int, sigma: float, grid: str = "centred") -> np.ndarray:
    if grid == "centred":
        x = np.arange(size) - (size - 1) / 2.0
    else:
        x = np.linspace(-size // 2, size // 2, size)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(img: np.ndarray, k: np.ndarray, border: str) -> np.ndarray:
    """Separable correlation with the 1-D kernel `k` along both axes ('valid' or zero 'same')."""
    if border == "same":
        return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)
    r = k.size // 2
    if img.shape[0] <= 2 * r or img.shape[1] <= 2 * r:
        raise ValueError(f"image of shape {img.shape} is too small for a {k.size}-tap window")
    out = cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def visual_information_fidelity(
    ref: np.ndarray, dist: np.ndarray, border: str = "valid", kernel: str = "centred"
) -> float:
    """Sheikh-Bovik pixel-domain multiscale VIF(ref, dist): 4 scales, windows 17/9/5/3, sigma_n^2 = 2.

    Needs at least 41x41 pixels with 'valid' filtering.
    """
    _check_pair(ref, dist, "ref, dist")
    sigma_n_sq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(4):
        size = 2 ** (4 - scale) + 1
        k = _gauss_1d(size, size / 5.0, kernel)
        if scale > 0:
            ref = _filter(ref, k, border)[::2, ::2]
            dist = _filter(dist, k, border)[::2, ::2]
        mu1, mu2 = _filter(ref, k, border), _filter(dist, k, border)
        s1 = _filter(ref * ref, k, border) - mu1 * mu1
        s2 = _filter(dist * dist, k, border) - mu2 * mu2
        s12 = _filter(ref * dist, k, border) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g[flat_ref] = 0.0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0.0
        flat_dist = s2 < eps
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        negative = g < 0
        sv[negative] = s2[negative]
        g[negative] = 0.0
        sv[sv <= eps] = eps
        num += float(np.log10(1.0 + g * g * s1 / (sv + sigma_n_sq)).sum())
        den += float(np.log10(1.0 + s1 / sigma_n_sq).sum())
    return _ratio(num, den)


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sx = cv2.filter2D(img, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(img, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    return sx, sy


def _sobel_magnitude(img: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, zero-padded borders."""
    return np.hypot(*_sobel(img))


def _edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation atan(Sy/Sx) (pi/2 where Sx == 0), zero-padded borders."""
    sx, sy = _sobel(img)
    safe_sx = np.where(sx == 0, 1.0, sx)
    return np.hypot(sx, sy), np.where(sx == 0, np.pi / 2, np.arctan(sy / safe_sx))


def _edge_preservation(
    g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray, equal_ratio: str
) -> np.ndarray:
    ratio = np.where(g_x == g_f, 1.0 if equal_ratio == "one" else g_f, 0.0)
    np.divide(g_f, g_x, out=ratio, where=g_x > g_f)
    np.divide(g_x, g_f, out=ratio, where=g_x < g_f)
    orient = 1.0 - np.abs(a_x - a_f) / (np.pi / 2)
    q_g = 0.9994 / (1.0 + np.exp(-15.0 * (ratio - 0.5)))
    q_a = 0.9879 / (1.0 + np.exp(-22.0 * (orient - 0.8)))
    return q_g * q_a


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray, equal_ratio: str = "one") -> float:
    """Xydeas-Petrovic Q^{AB/F}: Sobel edge preservation weighted by source edge strength (L=1)."""
    g_f, a_f = _edges(f)
    g_a, a_a = _edges(a)
    g_b, a_b = _edges(b)
    q_af = _edge_preservation(g_a, a_a, g_f, a_f, equal_ratio)
    q_bf = _edge_preservation(g_b, a_b, g_f, a_f, equal_ratio)
    return _ratio(float((q_af * g_a + q_bf * g_b).sum()), float((g_a + g_b).sum()))


def ssim(
    x: np.ndarray,
    f: np.ndarray,
    window: str = "gaussian",
    win_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 255.0,
    covariance: str = "population",
) -> float:
    """Mean SSIM(X,F) over 'valid' windows (Wang et al. 2004; K1 = 0.01, K2 = 0.03)."""
    _check_pair(x, f)
    k = _gauss_1d(win_size, sigma) if window == "gaussian" else np.full(win_size, 1.0 / win_size)
    mu_x, mu_f = _filter(x, k, "valid"), _filter(f, k, "valid")
    s_xx = _filter(x * x, k, "valid") - mu_x * mu_x
    s_ff = _filter(f * f, k, "valid") - mu_f * mu_f
    s_xf = _filter(x * f, k, "valid") - mu_x * mu_f
    if covariance == "sample":
        n = win_size * win_size
        s_xx, s_ff, s_xf = (s * (n / (n - 1.0)) for s in (s_xx, s_ff, s_xf))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2.0 * mu_x * mu_f + c1) * (2.0 * s_xf + c2)
    den = (mu_x * mu_x + mu_f * mu_f + c1) * (s_xx + s_ff + c2)
    return float(np.mean(num / den))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation r(X,Y) (MATLAB corr2); NaN if either image is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    return _ratio(float((xc * yc).sum()), math.sqrt(float((xc * xc).sum() * (yc * yc).sum())))


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD = r(F - B, A) + r(F - A, B) (Aslantas & Bendes 2015)."""
    return pearson(f - b, a) + pearson(f - a, b)


def psnr(
    f: np.ndarray, a: np.ndarray, b: np.ndarray, mse: str = "standard", peak: str = "255"
) -> float:
    """PSNR = 10 log10(peak^2 / MSE), MSE = (MSE(A,F) + MSE(B,F)) / 2 in the `mse` convention."""
    if mse == "vifb_sqrt":
        err = (math.sqrt(((a - f) ** 2).sum()) + math.sqrt(((b - f) ** 2).sum())) / (2.0 * f.size)
    else:
        err = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0
        if mse == "unit_scale":
            err /= 255.0**2
    top = 255.0 if peak == "255" else float(f.max())
    if err == 0:
        return math.inf
    if top == 0:
        return -math.inf
    return float(10.0 * math.log10(top * top / err))


def rmse(f: np.ndarray, a: np.ndarray, b: np.ndarray, norm: str = "standard") -> float:
    """RMSE = (RMSE(A,F) + RMSE(B,F)) / 2, RMSE(X,F) = sqrt(SSE/(MN)) ("vifb_sqrt": sqrt(SSE)/(MN))."""
    _check_pair(a, f, "a, f")
    _check_pair(b, f, "b, f")
    sse = (float(((a - f) ** 2).sum()), float(((b - f) ** 2).sum()))
    if norm == "standard":
        return (math.sqrt(sse[0] / f.size) + math.sqrt(sse[1] / f.size)) / 2.0
    return (math.sqrt(sse[0]) + math.sqrt(sse[1])) / (2.0 * f.size)


def cross_entropy(x: np.ndarray, f: np.ndarray, quantize: str = "round") -> float:
    """CE(X,F) = sum_l p_X(l) log2(p_X(l) / p_F(l)) over 256-bin histograms (Bulanon et al. 2009).

    This is the relative entropy of X's histogram to F's. Levels that are empty in either image are
    skipped, as every public implementation does (otherwise a level missing from F would make CE
    infinite). Zero when the histograms agree; lower is better.
    """
    _check_pair(x, f)
    px = np.bincount(_levels(x, quantize), minlength=256) / x.size
    pf = np.bincount(_levels(f, quantize), minlength=256) / f.size
    both = (px > 0) & (pf > 0)
    return float((px[both] * np.log2(px[both] / pf[both])).sum())


def edge_intensity(f: np.ndarray) -> float:
    """EI: mean Sobel gradient magnitude sqrt(Sx^2 + Sy^2) of F, borders replicated."""
    sx = cv2.filter2D(f, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_REPLICATE)
    sy = cv2.filter2D(f, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_REPLICATE)
    return float(np.hypot(sx, sy).mean())


def _stretch(x: np.ndarray, stretch: str) -> np.ndarray:
    """Min-max stretch to 0..255, "round"ed to integer levels or "exact" (constant image -> 0)."""
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros_like(x)
    out = (x - lo) / (hi - lo) * 255.0
    return np.floor(out + 0.5) if stretch == "round" else out


def _dog_csf(r: np.ndarray) -> np.ndarray:
    """Chen-Blum's difference-of-Gaussians CSF (f0 = 15.3870, f1 = 1.3456, a = 0.7622)."""
    return np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))


def _mannos_sakrison_csf(r: np.ndarray) -> np.ndarray:
    """Mannos-Sakrison CSF 2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1)."""
    return 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))


_CSF = {"dog": (_dog_csf, 15.0), "mannos_sakrison": (_mannos_sakrison_csf, 4.0)}


@functools.lru_cache(maxsize=16)
def _csf_gain(shape: tuple[int, int], csf: str) -> np.ndarray:
    """Half-spectrum (rfft2 layout) gain of CSF `csf` for an image of `shape`.

    The CSF is evaluated at r = the distance of a DFT bin from DC in bin indices divided by a
    fixed scale (15 for the DoG, 4 for Mannos-Sakrison): the frequency unit of the reference
    implementations of Qcb and Qcv (Z. Liu's fusion-metric code, used by VIFB), whose MATLAB
    freqspace grid times size/30 resp. size/8 reduces to it.
    """
    func, index_scale = _CSF[csf]
    m, n = shape
    v = (np.arange(m) - m // 2) / index_scale
    u = (np.arange(n) - n // 2) / index_scale
    gain = np.fft.ifftshift(func(np.hypot(u[None, :], v[:, None])))
    gain = gain[:, : n // 2 + 1].copy()
    gain.flags.writeable = False
    return gain


def _csf_filtered(x: np.ndarray, csf: str) -> np.ndarray:
    """Filter `x` in the DFT domain with a radial CSF gain (see `_csf_gain`).

    The gain is even (gain[k] == gain[-k]), so the filtered image is real and a real FFT suffices.
    """
    return np.fft.irfft2(np.fft.rfft2(x) * _csf_gain(x.shape, csf), s=x.shape)


def _gauss_31(sigma: float) -> np.ndarray:
    """1-D factor of the 31x31 Gaussian exp(-r^2 / 2 sigma^2) / (2 pi sigma^2) of Qcb.

    The 2-D kernel is the outer product of this factor with itself; it is not renormalised after
    truncation to 31x31 (as in the reference code).
    """
    t = np.arange(-15, 16, dtype=np.float64)
    return np.exp(-(t * t) / (2.0 * sigma * sigma)) / math.sqrt(2.0 * np.pi * sigma * sigma)


_QCB_G1, _QCB_G2 = _gauss_31(2.0), _gauss_31(4.0)


def _masked_contrast(x: np.ndarray, stretch: str) -> np.ndarray:
    """Chen-Blum: DoG-CSF filtering, band-limited contrast |G2*I / G4*I - 1|, masking response."""
    y = _csf_filtered(_stretch(x, stretch), "dog")
    fine = cv2.sepFilter2D(y, cv2.CV_64F, _QCB_G1, _QCB_G1, borderType=cv2.BORDER_CONSTANT)
    coarse = cv2.sepFilter2D(y, cv2.CV_64F, _QCB_G2, _QCB_G2, borderType=cv2.BORDER_CONSTANT)
    c = np.abs(fine / coarse - 1.0)
    return c**3 / (c**2 + 1e-4)  # k C^p / (h C^q + Z) with k = h = 1, p = 3, q = 2, Z = 1e-4


def chen_blum(f: np.ndarray, a: np.ndarray, b: np.ndarray, stretch: str = "exact") -> float:
    """Qcb (Chen & Blum 2009): contrast preservation weighted by source contrast saliency.

    Each image is min-max stretched to 0..255 (`stretch`: "exact", or "round" to integer levels
    as the reference code does) and filtered with the DoG contrast sensitivity function
    (f0 = 15.3870, f1 = 1.3456, a = 0.7622). Its band-limited local contrast |G_2*I / G_4*I - 1|
    (Gaussians of sigma 2 and 4, 31x31, zero padding) passes the masking function
    C' = C^3 / (C^2 + 1e-4). Per pixel Q_XF = min(C'_X, C'_F) / max(C'_X, C'_F) and the saliency
    weight is lambda_X = C'_X^2 / (C'_A^2 + C'_B^2); Qcb is the mean of
    lambda_A Q_AF + lambda_B Q_BF (0..1, higher is better). Constants and the CSF's frequency
    scaling follow Z. Liu's reference code (which VIFB runs).
    """
    _check_pair(a, f, "a, f")
    _check_pair(b, f, "b, f")
    with np.errstate(divide="ignore", invalid="ignore"):
        ca, cb, cf = (_masked_contrast(x, stretch) for x in (a, b, f))
        q_af = np.where(ca < cf, ca / cf, cf / ca)
        q_bf = np.where(cb < cf, cb / cf, cf / cb)
        total = ca * ca + cb * cb
        return float(np.mean((ca * ca * q_af + cb * cb * q_bf) / total))


def _block_reduce(x: np.ndarray, size: int, reduce: str) -> np.ndarray:
    """Per size x size block sums or means, partial blocks zero-padded to full size (blkproc)."""
    m, n = x.shape
    pm, pn = -(-m // size) * size, -(-n // size) * size
    padded = np.zeros((pm, pn))
    padded[:m, :n] = x
    blocks = padded.reshape(pm // size, size, pn // size, size)
    return blocks.sum(axis=(1, 3)) if reduce == "sum" else blocks.mean(axis=(1, 3))


def chen_varshney(
    f: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    window: int = 16,
    alpha: float = 5.0,
    stretch: str = "exact",
) -> float:
    """Qcv (Chen & Varshney 2007): saliency-weighted, CSF-filtered squared difference per region.

    Each image is min-max stretched to 0..255 (`stretch` as in `chen_blum`). Over non-overlapping
    window x window regions w: lambda_X(w) = sum_w g_X^alpha (g = Sobel magnitude, zero padding)
    and D_X(w) = mean_w of (CSF * (X - F))^2, with the Mannos-Sakrison CSF
    2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1). Partial regions at the right and bottom are
    zero-padded to full size (MATLAB blkproc). Qcv = sum_w [lambda_A D_A + lambda_B D_B] /
    sum_w [lambda_A + lambda_B] (>= 0, lower is better). The CSF's frequency scaling follows
    Z. Liu's reference code (which VIFB runs).
    """
    _check_pair(a, f, "a, f")
    _check_pair(b, f, "b, f")
    a, b, f = (_stretch(x, stretch) for x in (a, b, f))

    num = den = 0.0
    for x in (a, b):
        weight = _block_reduce(_sobel_magnitude(x) ** alpha, window, "sum")
        diff = _csf_filtered(x - f, "mannos_sakrison")
        num += float((weight * _block_reduce(diff * diff, window, "mean")).sum())
        den += float(weight.sum())
    return _ratio(num, den)


def _pairwise_ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: MetricConfig) -> float:
    opts = {
        "window": cfg.ssim_window,
        "win_size": cfg.ssim_win_size,
        "sigma": cfg.ssim_sigma,
        "data_range": cfg.ssim_data_range,
        "covariance": cfg.ssim_covariance,
    }
    total = ssim(a, f, **opts) + ssim(b, f, **opts)
    return total if cfg.ssim_reduce == "sum" else total / 2.0


def _pairwise_vif(f: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: MetricConfig) -> float:
    return visual_information_fidelity(
        a, f, cfg.vif_border, cfg.vif_kernel
    ) + visual_information_fidelity(b, f, cfg.vif_border, cfg.vif_kernel)


def _cc(f: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: MetricConfig) -> float:
    total = pearson(a, f) + pearson(b, f)
    return total / 2.0 if cfg.cc_reduce == "mean" else total


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, MetricConfig], float]] = {
    "EN": lambda f, a, b, c: entropy(f, c.en_quantize),
    "SD": lambda f, a, b, c: standard_deviation(f),
    "SF": lambda f, a, b, c: spatial_frequency(f, c.sf_norm, c.sf_range),
    "AG": lambda f, a, b, c: average_gradient(f, c.ag_gradient, c.ag_norm),
    "MI": fusion_mutual_information,
    "VIF": _pairwise_vif,
    "Qabf": lambda f, a, b, c: qabf(f, a, b, c.qabf_equal_ratio),
    "SSIM": _pairwise_ssim,
    "SCD": lambda f, a, b, c: scd(f, a, b),
    "CC": _cc,
    "PSNR": lambda f, a, b, c: psnr(f, a, b, c.psnr_mse, c.psnr_peak),
    "RMSE": lambda f, a, b, c: rmse(f, a, b, c.rmse_norm),
    "CE": lambda f, a, b, c: (
        (cross_entropy(a, f, c.en_quantize) + cross_entropy(b, f, c.en_quantize)) / 2.0
    ),
    "EI": lambda f, a, b, c: edge_intensity(f),
    "Qcb": lambda f, a, b, c: chen_blum(f, a, b, c.qc_stretch),
    "Qcv": lambda f, a, b, c: chen_varshney(f, a, b, c.qcv_window, c.qcv_alpha, c.qc_stretch),
}


def _score(
    name: str,
    f: list[np.ndarray],
    a: list[np.ndarray],
    b: list[np.ndarray],
    cfg: MetricConfig,
) -> float:
    """Metric `name` on planes: one value for greyscale F, else the mean over F's channels."""
    if len(f) == 1:
        return float(_METRICS[name](f[0], a[0], b[0], cfg))
    if name == "SF" and cfg.sf_channels == "tiled":
        return spatial_frequency(np.concatenate(f, axis=1), cfg.sf_norm, cfg.sf_range)
    values = [_METRICS[name](fk, a[k % len(a)], b[k % len(b)], cfg) for k, fk in enumerate(f)]
    return float(np.mean(values))


def resolve_config(preset: str = "textbook", **overrides: object) -> MetricConfig:
    """The preset's MetricConfig with `overrides` (MetricConfig field names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; must be one of {tuple(PRESETS)}")
    known = {f.name for f in fields(MetricConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown metric option(s) {unknown}; valid options: {sorted(known)}")
    return replace(PRESETS[preset], **overrides)


def evaluate_fusion(
    fused: np.ndarray,
    vis: np.ndarray,
    ir: np.ndarray,
    preset: str = "textbook",
    metrics: Sequence[str] | None = None,
    float_max: float = 1.0,
    **overrides: object,
) -> dict[str, float]:
    """Compute fusion metrics of `fused` against the visible and infrared sources.

    Inputs: uint8 or float (in [0, float_max]) arrays, HxW or RGB HxWx3, all of one size. RGB is
    converted to BT.601 Y (`prepare_image`) unless the config's colour="per_channel" and `fused`
    is RGB: then every metric is the mean of its values on the three channels (channel k of F
    against channel k of an RGB source, a greyscale source used as is; see `MetricConfig`).
    `preset` picks a suite's conventions (`PRESETS`); keyword `overrides` change single
    `MetricConfig` fields. `metrics` selects names from
    METRIC_NAMES (default: all the preset supports, in METRIC_NAMES order).
    Returns {name: value} as Python floats.
    """
    cfg = resolve_config(preset, **overrides)
    unsupported = PRESET_UNSUPPORTED.get(preset, {})
    if metrics is None:
        names = [m for m in METRIC_NAMES if m not in unsupported]
    else:
        names = list(metrics)
        bad = [m for m in names if m not in METRIC_NAMES]
        if bad:
            raise ValueError(f"metrics={bad}: unknown; valid names are {METRIC_NAMES}")
        for m in names:
            if m in unsupported:
                raise ValueError(f"metric {m!r} with preset={preset!r}: {unsupported[m]}")
    if cfg.colour == "per_channel":
        f = prepare_channels(fused, "fused", float_max)
    else:
        f = [prepare_image(fused, "fused", float_max)]
    if len(f) == 3:
        b = prepare_channels(vis, "vis", float_max)
        a = prepare_channels(ir, "ir", float_max)
    else:
        b = [prepare_image(vis, "vis", float_max)]
        a = [prepare_image(ir, "ir", float_max)]
    if not (f[0].shape == a[0].shape == b[0].shape):
        raise ValueError(
            f"fused, vis and ir must have one size, got {f[0].shape}, {b[0].shape} and {a[0].shape}"
        )
    return {m: _score(m, f, a, b, cfg) for m in names}
