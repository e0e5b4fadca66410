"""Image-fusion quality metrics with every convention made explicit.

The same fused image scores very differently under the scripts fusion papers use (bits vs nats,
sum vs mean, 0..1 vs 0..255, buggy PSNR variants; fusion_anchors.md §2). Each metric is implemented
once here; each convention difference is a named field of `MetricConfig`; `PRESETS` reproduce the
common suites; `evaluate_fusion` is the entry point.

Notation: A = infrared, B = visible, F = fused. Metric functions take float64 greyscale HxW arrays
on the 0..255 intensity scale (see `prepare_image`). Pairwise metrics are reported over both sources
(X(A,F) + X(B,F), CC as the mean). Undefined values (e.g. a correlation with a constant image) are NaN;
a zero-error PSNR is +inf. Only numpy and OpenCV are used; all metrics together take well under a
second on a 640x512 image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM", "SCD", "CC", "PSNR")

_LUMA_RGB = np.array(
    [0.299, 0.587, 0.114]
)  # ITU-R BT.601 luma, as cv2 RGB2GRAY and MATLAB rgb2gray
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


@dataclass(frozen=True)
class MetricConfig:
    """Convention switches; the defaults are the textbook definitions (fusion_anchors.md §2).

    en_quantize: how non-integer intensities fall into the 256 EN bins ("round" | "floor").
    sf_norm: SF mean over the valid differences ("valid") or divided by M*N ("MN", VIFB).
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
    """

    en_quantize: str = "round"
    sf_norm: str = "valid"
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


_CHOICES: dict[str, tuple[str, ...]] = {
    "en_quantize": ("round", "floor"),
    "sf_norm": ("valid", "MN"),
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
}

# Suites, as read in their code (fusion_anchors.md §2). A suite that lacks a metric (VIFB has no
# VIF/SCD/CC) gets the textbook convention for it.
PRESETS: dict[str, MetricConfig] = {
    "textbook": MetricConfig(),
    # VIFB MATLAB toolbox: floor EN bins, SF/MN, MI in nats on min-max stretched images,
    # Wang SSIM summed, PSNR from sqrt(SSE)/(MN) (~60 dB).
    "vifb": MetricConfig(
        en_quantize="floor",
        sf_norm="MN",
        mi_unit="nats",
        mi_hist="minmax",
        qabf_equal_ratio="g_fused",
        psnr_mse="vifb_sqrt",
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
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name} must be HxW, HxWx1 or HxWx3 (RGB), got shape {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got shape {img.shape}")
    if img.dtype == np.uint8:
        out = img.astype(np.float64)
        if out.ndim == 3:
            out = np.floor(out @ _LUMA_RGB + 0.5)
        return out
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
    out = np.clip(out, 0.0, float_max) * (255.0 / float_max)
    if out.ndim == 3:
        out = out @ _LUMA_RGB
    return out


def _check_pair(x: np.ndarray, f: np.ndarray, names: str = "x, f") -> None:
    if x.ndim != 2 or x.shape != f.shape:
        raise ValueError(f"{names} must be HxW arrays of one shape, got {x.shape} and {f.shape}")


def _entropy(counts: np.ndarray, log: Callable[[np.ndarray], np.ndarray] = np.log2) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * log(p)).sum())


def entropy(f: np.ndarray, quantize: str = "round") -> float:
    """EN = -sum_l p_l log2 p_l over a 256-bin histogram of F (0..255, clipped)."""
    q = np.floor(f + 0.5) if quantize == "round" else np.floor(f)
    levels = np.clip(q, 0, 255).astype(np.intp).ravel()
    return _entropy(np.bincount(levels, minlength=256))


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


def _edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation atan(Sy/Sx) (pi/2 where Sx == 0), zero-padded borders."""
    sx = cv2.filter2D(img, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(img, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
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
}


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

    Inputs: uint8 or float (in [0, float_max]) arrays, HxW or RGB HxWx3 (converted to BT.601 Y,
    see `prepare_image`), all of one size. `preset` picks a suite's conventions (`PRESETS`);
    keyword `overrides` change single `MetricConfig` fields. `metrics` selects names from
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
    f = prepare_image(fused, "fused", float_max)
    b = prepare_image(vis, "vis", float_max)
    a = prepare_image(ir, "ir", float_max)
    if not (f.shape == a.shape == b.shape):
        raise ValueError(
            f"fused, vis and ir must have one size, got {f.shape}, {b.shape} and {a.shape}"
        )
    return {m: float(_METRICS[m](f, a, b, cfg)) for m in names}
