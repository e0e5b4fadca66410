"""Multitask gradient methods on shared parameters: UnityGrad and its baselines behind one interface.

Every method is used the same way as `loss.backward()`:

    method.set_clip(1.0)              # once: clip the shared gradient at norm 1 (Nash-MTL's rule)
    optimizer.zero_grad()
    report = method.combine({"fusion": l_fus, "detection": l_det}, shared_params, step,
                            task_params={"fusion": fusion_head_params, "detection": det_head_params})
    optimizer.step()

`combine` runs the backward pass(es) and accumulates `.grad` on the shared parameters and on each
task's own parameters; a head only ever receives its own task's gradient, times that task's head
weight w_i. Each method boils down to coefficients c (the shared update is d = sum_i c_i g_i,
with g_i the gradient of task i's loss w.r.t. the shared parameters) and head weights w, computed
from the K x K Gram matrix of the g_i on *measurement* steps: every `update_every` steps (the first
call always measures). In between, the last c and w are reused with one backward of
sum_i c_i L_i, after which each head's gradient is rescaled by w_i / c_i, so the heads get the same
weighting on measurement and reuse steps (this assumes, as `task_params` means, that a head's
parameters feed only its own task's loss); a reuse step therefore costs a weighted-sum step.

A measurement step costs one `torch.autograd.grad` per task (retain_graph) through the shared
parameters; pass `task_params` and the heads' gradients come from the same calls, otherwise one
extra backward of sum_i w_i L_i provides them (and then reuse steps cannot separate the heads:
they get c_i).

Excluded tasks. A task whose loss does not require grad (the trainer detaches the detection loss
of a batch without objects: no box in any labelled image) or whose shared gradient is zero takes
no part in the solve: it gets c_i = w_i = 0 for that step, which is then a *partial* measurement
over the remaining tasks. A partial measurement is applied to its own step only: the coefficients
of the last full measurement are left untouched, and the next step measures again, so an alpha is
never reused across a step where a task was missing (a missing loss on a reuse step also makes
that step a partial measurement, never a reuse). Without this, a negatives-only
detection batch has a tiny gradient, alpha_det = 1 / (|g_det| sqrt(1 + cos)) explodes and is
reused for update_every - 1 further steps.

Clipping (`set_clip`). Nash-MTL clips the norm of the *shared* gradient after the method's
backward, and leaves the heads alone; clipping every parameter together instead lets alpha-scaled
head gradients shrink the shared step. Modes: "shared" (default: the shared gradient only, heads
unclipped, as in the reference), "each" (the shared gradient and each head's gradient on its own,
all at the same max norm), "global" (shared and heads together: the old behaviour, only for
reproducing earlier runs). The factor applied to the shared gradient is reported every step.

Diagnostics (Nash-MTL's premise is that the task gradients conflict). On measurement steps only,
because the per-task gradients are computed there anyway: cos(g_i, g_j) of the batch, the cosine
between exponential moving averages (`ema_beta`, over measurement steps) of the tasks' shared
gradients, which filters the batch noise that makes single-batch cosines look conflicting, and
|g_i| / |head gradient of task i| (both of task i's own loss). `MTLMonitor` accumulates these,
alpha and the clip factor over the run; its `summary()` says whether the premise held. Cost: one
K x P EMA buffer (float32) and a few vector operations per measurement step.

UnityGrad (seeds_digest.md §1.4) is Nash-MTL's bargaining solution: alpha > 0 with
(G G^T) alpha = 1/alpha, so d = G^T alpha has norm sqrt(K) and improves every task to first order.
It is invariant to the scale of each loss, so its gradients come out unscaled even under an AMP
GradScaler; use it without a GradScaler (bf16 autocast needs none), otherwise `unscale_` would
divide them a second time. Its raw shared update has norm sqrt(K): clip or tune the learning rate
accordingly (Nash-MTL clips the shared gradient norm at 1). With DistributedDataParallel note that
`torch.autograd.grad` bypasses DDP's gradient all-reduce, so the per-task Gram (and the clip, and
the diagnostics) are per-rank.

Task weights (the trainer's tasks are (1 - λ)·L_f and λ·L_d). weighted_sum: λ is the task weight,
in the shared update and in the heads. unitygrad: λ cancels exactly, in the shared update and in
the heads (alpha_i scales as 1/λ_i, so alpha_i λ_i does not depend on λ_i). gradnorm: the learned
weights absorb λ (their equilibrium makes w_i λ_i |g_i| track a λ-free target), heads get w_i λ_i
times their gradient; λ only sets the starting point. pcgrad: a task weight applied after the
projections (projecting g_i off g_j does not depend on |g_j|), heads get λ_i times their
gradient. cagrad and mgda: λ changes the solution (the mean gradient and the min-norm point of
the scaled gradients), heads get λ_i times their own gradient (Adam mostly cancels a constant
head scale).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

CLIP_MODES = ("shared", "each", "global")

# ----------------------------------------------------------------------------- K x K solvers


@dataclass(frozen=True)
class UnityGradSolution:
    """Weights alpha [K] (0 for excluded tasks), whether the clamp acted, and the final residual."""

    alpha: np.ndarray
    clamped: bool
    residual: float
    excluded: tuple[int, ...]


def unitygrad_solve(
    gram: np.ndarray,
    eig_floor: float = 0.01,
    zero_tol: float = 1e-8,
    tol: float = 1e-6,
    solver: str = "auto",
) -> UnityGradSolution:
    """Solve alpha_i (M alpha)_i = 1, alpha > 0, for a K x K Gram matrix M = G G^T (float64).

    The problem is solved on the cosine matrix C = D^-1 M D^-1 (D = diag of gradient norms n_i):
    beta_i (C beta)_i = 1, alpha = beta / n. Tasks with n_i <= zero_tol * max(n) are excluded and
    get alpha_i = 0.

    Clamp: when the gradients nearly cancel (a Pareto-stationary point) alpha diverges, so the
    eigenvalues of C are floored at `eig_floor`. For two tasks this is exactly cos(g_1, g_2) >=
    -1 + eig_floor (default: cos >= -0.99, i.e. n_i alpha_i <= 10), and the shared update shrinks
    instead of blowing up. With more tasks the floor also regularises linearly dependent gradients.

    solver: "auto" uses the closed form alpha_i = 1 / (n_i sqrt(1 + cos)) for two tasks and damped
    Newton on f(beta) = 1/2 beta^T C beta - sum log beta (strictly convex) otherwise; "newton"
    forces Newton. Raises RuntimeError if the relative residual max|beta (C beta) - 1| exceeds `tol`.
    """
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square K x K matrix, got shape {gram.shape}")
    if not np.isfinite(gram).all():
        raise FloatingPointError(f"gram contains NaN or inf: {gram}")
    if solver not in ("auto", "newton"):
        raise ValueError(f"solver={solver!r}; must be 'auto' or 'newton'")
    if not 0.0 < eig_floor < 1.0:
        raise ValueError(f"eig_floor={eig_floor}; must be in (0, 1)")
    num_tasks = gram.shape[0]
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    alpha = np.zeros(num_tasks)
    top = norms.max()
    active = np.nonzero(norms > zero_tol * top)[0] if top > 0 else np.zeros(0, dtype=np.intp)
    excluded = tuple(int(i) for i in np.setdiff1d(np.arange(num_tasks), active))
    if active.size == 0:
        return UnityGradSolution(alpha, False, 0.0, excluded)
    n = norms[active]
    cos = gram[np.ix_(active, active)] / np.outer(n, n)
    cos = (cos + cos.T) / 2.0
    np.fill_diagonal(cos, 1.0)
    if active.size == 2 and solver == "auto":
        c = float(np.clip(cos[0, 1], -1.0, 1.0))
        clamped = c < -1.0 + eig_floor
        beta = np.full(2, 1.0 / math.sqrt(1.0 + max(c, -1.0 + eig_floor)))
        cos_used = np.array([[1.0, max(c, -1.0 + eig_floor)], [max(c, -1.0 + eig_floor), 1.0]])
    else:
        evals, evecs = np.linalg.eigh(cos)
        clamped = bool(evals.min() < eig_floor)
        cos_used = (evecs * np.maximum(evals, eig_floor)) @ evecs.T if clamped else cos
        beta = _newton_bargaining(cos_used)
    residual = float(np.abs(beta * (cos_used @ beta) - 1.0).max())
    if residual > tol:
        raise RuntimeError(f"UnityGrad solver did not converge: residual {residual:.3g} > {tol}")
    alpha[active] = beta / n
    return UnityGradSolution(alpha, bool(clamped), residual, excluded)


def _newton_bargaining(c: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Damped Newton on f(b) = 1/2 b^T C b - sum log b for positive definite C; returns b > 0."""
    k = c.shape[0]

    def objective(b: np.ndarray) -> float:
        return 0.5 * float(b @ c @ b) - float(np.log(b).sum())

    b = 1.0 / np.sqrt(np.diag(c))
    b *= math.sqrt(k / float(b @ c @ b))  # optimal scale along the starting ray
    for _ in range(max_iter):
        cb = c @ b
        if np.abs(b * cb - 1.0).max() < 1e-12:
            break
        grad = cb - 1.0 / b
        step = -np.linalg.solve(c + np.diag(1.0 / (b * b)), grad)
        t = 1.0
        while (b + t * step <= 0).any():
            t *= 0.5
        f0, slope = objective(b), float(grad @ step)
        while objective(b + t * step) > f0 + 1e-4 * t * slope and t > 1e-12:
            t *= 0.5
        b = b + t * step
    return b


def unitygrad_weights(G: Tensor, eig_floor: float = 0.01, solver: str = "auto") -> Tensor:
    """UnityGrad weights alpha [K] for per-task gradients G [K, P]: (G G^T) alpha = 1/alpha.

    alpha > 0 for tasks with a non-zero gradient, 0 for excluded ones (see `unitygrad_solve` for
    the clamp and the solver). Returned on G's device in G's floating dtype.
    """
    if G.ndim != 2 or G.shape[0] == 0:
        raise ValueError(f"G must be [K, P] with K >= 1, got shape {tuple(G.shape)}")
    work = G if G.dtype in (torch.float32, torch.float64) else G.float()
    gram = (work @ work.T).double().cpu().numpy()
    sol = unitygrad_solve(gram, eig_floor=eig_floor, solver=solver)
    return torch.as_tensor(sol.alpha, dtype=work.dtype, device=G.device)


def pcgrad_coefficients(gram: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """PCGrad in Gram space: A [K, K] with projected g_i' = sum_k A_ik g_k.

    For each task i and each other task j in `orders[i]`: if g_i'.g_j < 0, g_i' -= (g_i'.g_j /
    |g_j|^2) g_j (Yu et al. 2020). Only dot products are needed, so this equals the P-dim version.
    """
    k = gram.shape[0]
    coef = np.eye(k)
    for i in range(k):
        for j in orders[i]:
            dot = float(coef[i] @ gram[:, j])
            if dot < 0 and gram[j, j] > 0:
                coef[i, j] -= dot / gram[j, j]
    return coef


def pcgrad_project(G: Tensor, generator: np.random.Generator | None = None) -> Tensor:
    """PCGrad-projected per-task gradients [K, P] (random projection order from `generator`)."""
    gram = (G @ G.T).double().cpu().numpy()
    coef = pcgrad_coefficients(gram, _random_orders(G.shape[0], generator))
    return torch.as_tensor(coef, dtype=G.dtype, device=G.device) @ G


def _random_orders(k: int, rng: np.random.Generator | None) -> list[list[int]]:
    rng = rng if rng is not None else np.random.default_rng()
    return [[int(j) for j in rng.permutation(k) if j != i] for i in range(k)]


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def _simplex_minimize(
    fun: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    k: int,
    iters: int = 500,
) -> np.ndarray:
    """Projected gradient descent with Armijo backtracking on the probability simplex."""
    w = np.full(k, 1.0 / k)
    step = 1.0
    f = fun(w)
    for _ in range(iters):
        g = grad(w)
        while True:
            cand = _project_simplex(w - step * g)
            f_cand = fun(cand)
            if f_cand <= f + g @ (cand - w) + np.sum((cand - w) ** 2) / (2 * step) or step < 1e-12:
                break
            step *= 0.5
        if np.abs(cand - w).max() < 1e-12:
            break
        w, f = cand, f_cand
        step *= 2.0
    return w


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """MGDA: simplex weights w minimising |sum_i w_i g_i|^2 = w^T M w (Sener & Koltun 2018)."""
    scale = max(float(np.abs(gram).max()), 1e-300)
    m = gram / scale
    return _simplex_minimize(lambda w: float(w @ m @ w), lambda w: 2.0 * m @ w, gram.shape[0])


def cagrad_coefficients(gram: np.ndarray, c: float = 0.4, rescale: bool = True) -> np.ndarray:
    """CAGrad (Liu et al. 2021): coefficients of d = g0 + (sqrt(phi)/|g_w|) g_w, g0 the mean gradient.

    w minimises g_w.g0 + sqrt(phi) |g_w| over the simplex, phi = c^2 |g0|^2; d maximises the worst
    task improvement within the ball |d - g0| <= c |g0|. rescale divides d by (1 + c^2), as in the
    authors' default.
    """
    k = gram.shape[0]
    scale = max(float(np.abs(gram).max()), 1e-300)
    m = gram / scale
    b = m.mean(axis=1)  # g_i . g0
    sqrt_phi = c * math.sqrt(max(float(m.mean()), 0.0))  # c |g0|

    def fun(w: np.ndarray) -> float:
        return float(w @ b) + sqrt_phi * math.sqrt(max(float(w @ m @ w), 0.0) + 1e-18)

    def grad(w: np.ndarray) -> np.ndarray:
        return b + sqrt_phi * (m @ w) / math.sqrt(max(float(w @ m @ w), 0.0) + 1e-18)

    w = _simplex_minimize(fun, grad, k)
    gw_norm = math.sqrt(max(float(w @ m @ w), 0.0))
    coef = np.full(k, 1.0 / k) + (sqrt_phi / gw_norm if gw_norm > 0 else 0.0) * w
    return coef / (1.0 + c * c) if rescale else coef


# ----------------------------------------------------------------------------- diagnostics


@dataclass
class RunningStat:
    """Count, mean, min, max and last value of the finite values added; `negative` counts < 0."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float = math.nan
    negative: int = 0

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.count += 1
        self.total += value
        self.low, self.high, self.last = min(self.low, value), max(self.high, value), value
        self.negative += value < 0

    def summary(self) -> dict[str, float | int | None]:
        if not self.count:
            return {
                "count": 0,
                "mean": None,
                "min": None,
                "max": None,
                "last": None,
                "negative_fraction": None,
            }
        return {
            "count": self.count,
            "mean": self.total / self.count,
            "min": self.low,
            "max": self.high,
            "last": self.last,
            "negative_fraction": self.negative / self.count,
        }


class MTLMonitor:
    """Run-long record of the premise diagnostics (see the module docstring).

    EMA of each task's shared gradient over the measurement steps where the task took part
    (`beta`), the batch and EMA cosines, |g_i| / |head gradient|, alpha of full measurements, the
    shared clip factor of every step and how often each task was excluded. Part of the method's
    state, so a resumed run continues the same record.
    """

    def __init__(self, tasks: Sequence[str], beta: float = 0.9) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"ema_beta={beta}; must be in [0, 1)")
        self.tasks = tuple(tasks)
        self.beta = beta
        self.warmup = round(1.0 / (1.0 - beta))  # measurements before the EMA is trusted
        k = len(self.tasks)
        self.ema: Tensor | None = None  # [K, P] float32
        self.ema_updates = np.zeros(k, dtype=np.int64)
        self.steps = 0
        self.measurements = 0
        self.partial_measurements = 0
        self.excluded_steps = dict.fromkeys(self.tasks, 0)
        pairs = [f"{self.tasks[i]}-{self.tasks[j]}" for i in range(k) for j in range(i + 1, k)]
        self.cos = {p: RunningStat() for p in pairs}
        self.ema_cos = {p: RunningStat() for p in pairs}
        self.ema_cos_warm = {p: RunningStat() for p in pairs}
        self.ratio = {t: RunningStat() for t in self.tasks}
        self.alpha = {t: RunningStat() for t in self.tasks}
        self.clip_factor = RunningStat()
        self.shared_norm = RunningStat()
        self.clipped_steps = 0

    def update_ema(self, rows: Mapping[int, Tensor]) -> np.ndarray:
        """Fold the measured rows {task index: g_i [P]} into the EMAs; EMA cosines [K, K] (NaN
        where a task has no EMA yet)."""
        k = len(self.tasks)
        first = next(iter(rows.values()))
        size = first.numel()
        if self.ema is None or self.ema.shape != (k, size):
            self.ema = torch.zeros(k, size, dtype=torch.float32, device=first.device)
            self.ema_updates[:] = 0
        elif self.ema.device != first.device:  # restored from a checkpoint on the CPU
            self.ema = self.ema.to(first.device)
        for i, row in rows.items():
            self.ema[i].mul_(self.beta).add_(row.detach().float(), alpha=1.0 - self.beta)
            self.ema_updates[i] += 1
        gram = (self.ema @ self.ema.T).double().cpu().numpy()
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = gram / np.outer(norms, norms)
        cos[~((norms > 0)[:, None] & (norms > 0)[None, :])] = np.nan
        return cos

    def record_measurement(
        self,
        cos: np.ndarray,
        ema_cos: np.ndarray,
        ratios: np.ndarray,
        alpha: np.ndarray,
        partial: bool,
    ) -> None:
        k = len(self.tasks)
        self.measurements += 1
        self.partial_measurements += partial
        for i in range(k):
            self.ratio[self.tasks[i]].add(float(ratios[i]))
            if not partial:
                self.alpha[self.tasks[i]].add(float(alpha[i]))
            for j in range(i + 1, k):
                pair = f"{self.tasks[i]}-{self.tasks[j]}"
                self.cos[pair].add(float(cos[i, j]))
                self.ema_cos[pair].add(float(ema_cos[i, j]))
                if min(self.ema_updates[i], self.ema_updates[j]) > self.warmup:
                    self.ema_cos_warm[pair].add(float(ema_cos[i, j]))

    def record_step(self, clip_factor: float, shared_norm: float, excluded: Sequence[str]) -> None:
        self.steps += 1
        self.clip_factor.add(clip_factor)
        self.shared_norm.add(shared_norm)
        self.clipped_steps += clip_factor < 1.0
        for task in excluded:
            self.excluded_steps[task] += 1

    def premise(self) -> tuple[bool | None, str]:
        """(whether the tasks' averaged shared gradients ever conflicted, one line saying so).

        "Averaged" is the EMA cosine after `warmup` measurements of both tasks (all measurements
        when the run had fewer); None when nothing was measured.
        """
        lines, verdicts = [], []
        for pair, warm in self.ema_cos_warm.items():
            stat = warm if warm.count else self.ema_cos[pair]
            if not stat.count:
                continue
            conflict = stat.low < 0
            verdicts.append(conflict)
            lines.append(
                f"{pair}: EMA cosine min {stat.low:.3f}, mean {stat.total / stat.count:.3f}, "
                f"last {stat.last:.3f} over {stat.count} measurements"
            )
        if not verdicts:
            return None, "premise not measured: no per-task gradients were computed in this run"
        if any(verdicts):
            return True, "Nash's premise (conflicting gradients) holds at times: " + "; ".join(
                lines
            )
        return False, (
            "Nash's premise (conflicting gradients) does not hold in this run: the averaged "
            "shared task gradients never conflicted (EMA cosine >= 0): " + "; ".join(lines)
        )

    def summary(self) -> dict[str, object]:
        holds, line = self.premise()
        return {
            "steps": self.steps,
            "measurements": self.measurements,
            "partial_measurements": self.partial_measurements,
            "excluded_steps": dict(self.excluded_steps),
            "ema_beta": self.beta,
            "ema_warmup_measurements": self.warmup,
            "cosine": {p: s.summary() for p, s in self.cos.items()},
            "ema_cosine": {p: s.summary() for p, s in self.ema_cos.items()},
            "ema_cosine_after_warmup": {p: s.summary() for p, s in self.ema_cos_warm.items()},
            "shared_to_head_grad_ratio": {t: s.summary() for t, s in self.ratio.items()},
            "alpha": {t: s.summary() for t, s in self.alpha.items()},
            "clip_factor": self.clip_factor.summary(),
            "clipped_fraction": self.clipped_steps / self.steps if self.steps else None,
            "shared_grad_norm": self.shared_norm.summary(),
            "premise_conflicting_gradients": holds,
            "premise": line,
        }


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class StepReport:
    """What one `combine` call did.

    alpha: coefficient of each task's gradient in this step's shared update (loss weight for
        UnityGrad); 0 for a task excluded at this step.
    head_weights: scale applied to each head's own-task gradient this step.
    grad_norms / cosines: |g_i| and cos(g_i, g_j) (i before j in task order) on the measured
        parameters at `measured_step` (NaN before the first measurement).
    ema_cosines: cosine of the tasks' EMA shared gradients after that measurement.
    grad_ratios: |g_i| / |gradient of task i's loss on its head| at that measurement (NaN without
        task_params).
    recomputed: whether this step measured and recomputed the coefficients.
    partial: this step's measurement left a task out (its coefficients were not kept).
    excluded: tasks left out at this step (loss without grad, or zero shared gradient).
    clamped: UnityGrad's clamp acted at the last measurement.
    clip_factor: factor applied to the shared gradient by the clip (1.0 = not clipped);
        shared_grad_norm: its norm before clipping. head_clip_factors: per head (mode "each").
    """

    step: int
    alpha: dict[str, float]
    head_weights: dict[str, float]
    grad_norms: dict[str, float]
    cosines: dict[tuple[str, str], float]
    measured_step: int | None
    recomputed: bool
    excluded: tuple[str, ...]
    clamped: bool
    ema_cosines: dict[tuple[str, str], float] = field(default_factory=dict)
    grad_ratios: dict[str, float] = field(default_factory=dict)
    partial: bool = False
    clip_factor: float = 1.0
    shared_grad_norm: float = math.nan
    head_clip_factors: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Flat {name: value} for loggers, the same keys every step: alpha/<task>,
        grad_norm/<task>, cos/<a>-<b>, ema_cos/<a>-<b>, grad_ratio/<task>, excluded/<task>,
        clamped, partial, clip_factor, grad_norm_shared and clip_factor/<task> (NaN unless the
        heads are clipped on their own)."""
        out = {f"alpha/{t}": v for t, v in self.alpha.items()}
        out.update({f"grad_norm/{t}": v for t, v in self.grad_norms.items()})
        out.update({f"cos/{a}-{b}": v for (a, b), v in self.cosines.items()})
        out.update({f"ema_cos/{a}-{b}": v for (a, b), v in self.ema_cosines.items()})
        out.update({f"grad_ratio/{t}": v for t, v in self.grad_ratios.items()})
        out.update({f"excluded/{t}": float(t in self.excluded) for t in self.alpha})
        out["clamped"] = float(self.clamped)
        out["partial"] = float(self.partial)
        out["clip_factor"] = self.clip_factor
        out["grad_norm_shared"] = self.shared_grad_norm
        out.update(
            {f"clip_factor/{t}": self.head_clip_factors.get(t, math.nan) for t in self.alpha}
        )
        return out


@dataclass
class _Measurement:
    """The last measurement's numbers (full or partial), for reports."""

    step: int
    norms: np.ndarray
    gram: np.ndarray
    ema_cos: np.ndarray
    ratios: np.ndarray
    excluded: tuple[int, ...]
    clamped: bool
    partial: bool


class MultiTaskMethod(ABC):
    """Shared machinery; subclasses implement `_solve(gram, losses, active)` -> (c, w, clamped).

    tasks: task names, in the order used for coefficients and reports.
    update_every: measure gradients and recompute coefficients every this many steps (>= 1).
    ema_beta: decay of the diagnostics' gradient EMAs, per measurement step.
    """

    name = "base"
    adaptive = True
    zero_tol = 1e-8  # a shared gradient below zero_tol * the largest one counts as zero

    def __init__(self, tasks: Sequence[str], update_every: int = 1, ema_beta: float = 0.9) -> None:
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"tasks must be unique non-empty names, got {tasks!r}")
        min_every = 1 if self.adaptive else 0
        if not isinstance(update_every, int) or update_every < min_every:
            raise ValueError(f"update_every={update_every!r}; must be an int >= {min_every}")
        self.tasks = tasks
        self.update_every = update_every
        k = len(tasks)
        self._coef = np.ones(k)  # of the last full measurement: what reuse steps apply
        self._head = np.ones(k)
        self._measured_step: int | None = None  # step of the last full measurement
        self._remeasure = False
        self._last: _Measurement | None = None
        self.clip_norm: float | None = None
        self.clip_mode = "shared"
        self.monitor = MTLMonitor(tasks, ema_beta)

    def set_clip(self, max_norm: float | None, mode: str = "shared") -> None:
        """Clip inside `combine` (see the module docstring); max_norm None turns clipping off."""
        if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"max_norm={max_norm!r}; must be > 0 or None")
        if mode not in CLIP_MODES:
            raise ValueError(f"clip mode {mode!r}; must be one of {CLIP_MODES}")
        self.clip_norm, self.clip_mode = max_norm, mode

    @property
    def coefficients(self) -> dict[str, float]:
        """c of the last full measurement: what reuse steps apply (initial values before one)."""
        return {t: float(v) for t, v in zip(self.tasks, self._coef, strict=True)}

    def bind(self, named_shared: Sequence[tuple[str, Tensor]]) -> None:  # noqa: B027
        """Resolve options that name shared parameters (GradNorm's `layer`); a no-op here."""

    def summary(self) -> dict[str, object]:
        """The run's diagnostics (`MTLMonitor.summary`) with the method's settings."""
        return {
            "method": self.name,
            "tasks": list(self.tasks),
            "update_every": self.update_every,
            "clip_norm": self.clip_norm,
            "clip_mode": self.clip_mode,
            **self.monitor.summary(),
        }

    @abstractmethod
    def _solve(
        self, gram: np.ndarray, losses: Sequence[Tensor], active: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Coefficients c [K], head weights w [K] and the clamp flag from the Gram [K, K]
        (rows and columns of tasks outside `active` are zero)."""

    def _measure_params(self, shared: list[Tensor]) -> list[Tensor]:
        """Parameters whose per-task gradients form the Gram (a subset only if c == w)."""
        return shared

    # -- interface
    def combine(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        step: int,
        task_params: Mapping[str, Sequence[Tensor]] | None = None,
    ) -> StepReport:
        """Backpropagate the task losses; accumulate `.grad` on shared and task parameters, then
        clip (`set_clip`)."""
        loss_list = self._check_losses(losses)
        shared = [p for p in shared_params if p.requires_grad]
        if not shared:
            raise ValueError("shared_params contains no parameter that requires grad")
        heads = self._check_task_params(task_params)
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r}; must be an int >= 0")
        k = len(self.tasks)
        missing = [i for i, loss in enumerate(loss_list) if not loss.requires_grad]
        recomputed = False
        if len(missing) == k:  # no loss depends on any parameter: nothing to backpropagate
            coef, head_w, excluded, partial = np.zeros(k), np.zeros(k), tuple(range(k)), True
            self._remeasure = self._remeasure or self.adaptive
        elif self._due(step) or (missing and self.adaptive):
            coef, head_w, excluded, partial = self._measure_and_apply(
                loss_list, shared, heads, step
            )
            recomputed = True
        else:
            coef, head_w = self._coef.copy(), self._head.copy()
            coef[missing], head_w[missing] = 0.0, 0.0
            excluded, partial = tuple(missing), False
            self._apply_reuse(loss_list, coef, head_w, heads)
        shared_norm, factor, head_factors = self._clip(shared, heads)
        names = tuple(self.tasks[i] for i in excluded)
        self.monitor.record_step(factor, shared_norm, names)
        return self._report(
            step, recomputed, coef, head_w, names, partial, factor, shared_norm, head_factors
        )

    def _due(self, step: int) -> bool:
        if self.update_every == 0:
            return False
        last = self._measured_step
        return last is None or self._remeasure or step < last or step - last >= self.update_every

    def _check_losses(self, losses: Mapping[str, Tensor]) -> list[Tensor]:
        if not isinstance(losses, Mapping) or set(losses) != set(self.tasks):
            got = sorted(losses) if isinstance(losses, Mapping) else type(losses).__name__
            raise ValueError(f"losses must be a dict with keys {list(self.tasks)}, got {got}")
        out = []
        for t in self.tasks:
            loss = losses[t]
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"losses[{t!r}] must be a scalar tensor, got {loss!r}")
            out.append(loss.reshape(()))
        return out

    def _check_task_params(
        self, task_params: Mapping[str, Sequence[Tensor]] | None
    ) -> dict[str, list[Tensor]] | None:
        if task_params is None:
            return None
        unknown = sorted(set(task_params) - set(self.tasks))
        if unknown:
            raise ValueError(f"task_params has unknown task(s) {unknown}; tasks: {self.tasks}")
        return {t: [p for p in task_params.get(t, ()) if p.requires_grad] for t in self.tasks}

    def _backward_weighted(self, losses: Sequence[Tensor], weights: np.ndarray) -> None:
        terms = [
            float(w) * loss
            for w, loss in zip(weights, losses, strict=True)
            if w and loss.requires_grad
        ]
        if terms:
            torch.stack(terms).sum().backward()

    def _apply_reuse(
        self,
        losses: Sequence[Tensor],
        coef: np.ndarray,
        head_w: np.ndarray,
        heads: dict[str, list[Tensor]] | None,
    ) -> None:
        """One backward of sum_i c_i L_i; then head i's gradient is rescaled to w_i (a head with
        c_i = 0 but w_i != 0 gets its gradient from a head-only autograd.grad)."""
        differ = [
            i
            for i, loss in enumerate(losses)
            if loss.requires_grad and not math.isclose(coef[i], head_w[i], rel_tol=1e-12)
        ]
        if heads is None or not differ:
            self._backward_weighted(losses, coef)
            return
        stash: dict[int, list[Tensor | None]] = {}
        for i in differ:  # keep what was accumulated before this call out of the rescaling
            params = heads[self.tasks[i]]
            stash[i] = [p.grad for p in params]
            for p in params:
                p.grad = None
        tiny = [i for i in differ if abs(coef[i]) <= 1e-6 * abs(head_w[i])]
        own = {
            i: torch.autograd.grad(
                losses[i], heads[self.tasks[i]], retain_graph=True, allow_unused=True
            )
            for i in tiny
            if heads[self.tasks[i]]
        }
        self._backward_weighted(losses, coef)
        for i in differ:
            params = heads[self.tasks[i]]
            if i in own:
                for p in params:
                    p.grad = None
                _accumulate_each(params, own[i], float(head_w[i]))
            elif i not in tiny:
                scale = float(head_w[i] / coef[i])
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(scale)
            for p, old in zip(params, stash[i], strict=True):
                if old is not None:
                    p.grad = old if p.grad is None else p.grad.add_(old)

    def _measure_and_apply(
        self,
        losses: Sequence[Tensor],
        shared: list[Tensor],
        heads: dict[str, list[Tensor]] | None,
        step: int,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], bool]:
        """Measure per-task gradients, recompute coefficients and apply them; returns the applied
        (c, w), the excluded tasks and whether the measurement was partial."""
        measure = self._measure_params(shared)
        subset = measure is not shared
        collect_heads = heads is not None and not subset
        k = len(self.tasks)
        active = [i for i, loss in enumerate(losses) if loss.requires_grad]
        rows: dict[int, Tensor] = {}
        head_grads: dict[int, tuple[Tensor | None, ...]] = {}
        for pos, i in enumerate(active):
            own = heads[self.tasks[i]] if heads is not None else []
            retain = not collect_heads or pos < len(active) - 1
            grads = torch.autograd.grad(
                losses[i], [*measure, *own], retain_graph=retain, allow_unused=True
            )
            rows[i] = _flatten(grads[: len(measure)], measure)
            head_grads[i] = grads[len(measure) :]
        G = torch.stack([rows[i] for i in active])  # [K_active, P]
        if G.dtype not in (torch.float32, torch.float64):
            G = G.float()  # fp16/bf16 Gram entries overflow or lose precision
        gram = np.zeros((k, k))
        gram[np.ix_(active, active)] = (G @ G.T).double().cpu().numpy()
        if not np.isfinite(gram).all():
            bad = [self.tasks[i] for i in range(k) if not np.isfinite(gram[i, i])]
            raise FloatingPointError(f"non-finite gradient for task(s) {bad} at step {step}")
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        live = [i for i in active if norms[i] > self.zero_tol * norms.max()]
        excluded = tuple(i for i in range(k) if i not in live)
        partial = bool(excluded)
        solve_gram = np.zeros((k, k))
        solve_gram[np.ix_(live, live)] = gram[np.ix_(live, live)]
        if live:
            coef, head_w, clamped = self._solve(solve_gram, losses, live)
            coef = np.array(coef, dtype=np.float64)
            head_w = np.array(head_w, dtype=np.float64)
        else:
            coef, head_w, clamped = np.zeros(k), np.zeros(k), False
        coef[list(excluded)], head_w[list(excluded)] = 0.0, 0.0
        if collect_heads:
            if live:
                _accumulate(measure, sum(float(coef[i]) * rows[i] for i in live))
            for i in live:
                _accumulate_each(heads[self.tasks[i]], head_grads[i], float(head_w[i]))
        else:
            if subset and not np.allclose(coef, head_w):
                raise RuntimeError(f"{self.name}: measuring a parameter subset needs c == w")
            self._backward_weighted(losses, head_w)
            extra = [i for i in live if coef[i] != head_w[i]]
            if extra:
                _accumulate(measure, sum(float(coef[i] - head_w[i]) * rows[i] for i in extra))
        # diagnostics: only numbers this measurement already has
        ema_cos = (
            self.monitor.update_ema({i: rows[i] for i in live}) if live else np.full((k, k), np.nan)
        )
        ratios = np.full(k, np.nan)
        if heads is not None:
            measured = [i for i in live if any(g is not None for g in head_grads[i])]
            if measured:
                head_norms = (
                    torch.stack(
                        [_norm([g for g in head_grads[i] if g is not None]) for i in measured]
                    )
                    .double()
                    .cpu()
                    .numpy()
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratios[measured] = norms[measured] / head_norms
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = gram / np.outer(norms, norms)
        cos[~((norms > 0)[:, None] & (norms > 0)[None, :])] = np.nan
        self.monitor.record_measurement(cos, ema_cos, ratios, coef, partial)
        self._last = _Measurement(step, norms, gram, ema_cos, ratios, excluded, clamped, partial)
        if not partial:
            self._coef, self._head = coef.copy(), head_w.copy()
        if partial and self.adaptive:
            # applied to this step only; the last full measurement's coefficients stay, and the
            # next step measures again instead of reusing them across this step
            self._remeasure = True
        else:
            self._measured_step, self._remeasure = step, False
        return coef, head_w, excluded, partial

    def _clip(
        self, shared: list[Tensor], heads: dict[str, list[Tensor]] | None
    ) -> tuple[float, float, dict[str, float]]:
        """Clip per `clip_mode`; (shared norm before clipping, shared factor, head factors)."""
        max_norm = self.clip_norm
        head_groups = heads or {}
        if self.clip_mode == "global" and max_norm is not None:
            every = shared + [p for t in self.tasks for p in head_groups.get(t, ())]
            shared_norm = float(_grad_norm(shared))
            total = float(torch.nn.utils.clip_grad_norm_(every, max_norm))
            return shared_norm, _factor(total, max_norm), {}
        if max_norm is None:
            return float(_grad_norm(shared)), 1.0, {}
        shared_norm = float(torch.nn.utils.clip_grad_norm_(shared, max_norm))
        factors = {}
        if self.clip_mode == "each":
            for t in self.tasks:
                params = head_groups.get(t, [])
                if any(p.grad is not None for p in params):
                    factors[t] = _factor(
                        float(torch.nn.utils.clip_grad_norm_(params, max_norm)), max_norm
                    )
        return shared_norm, _factor(shared_norm, max_norm), factors

    def _report(
        self,
        step: int,
        recomputed: bool,
        coef: np.ndarray,
        head_w: np.ndarray,
        excluded: tuple[str, ...],
        partial: bool,
        clip_factor: float,
        shared_norm: float,
        head_factors: dict[str, float],
    ) -> StepReport:
        k = len(self.tasks)
        last = self._last
        norms = last.norms if last is not None else np.full(k, np.nan)
        cosines, ema = {}, {}
        for i in range(k):
            for j in range(i + 1, k):
                pair = (self.tasks[i], self.tasks[j])
                den = norms[i] * norms[j]
                cosines[pair] = float(last.gram[i, j] / den) if last and den > 0 else math.nan
                ema[pair] = float(last.ema_cos[i, j]) if last else math.nan
        ratios = last.ratios if last is not None else np.full(k, np.nan)
        return StepReport(
            step=step,
            alpha={t: float(v) for t, v in zip(self.tasks, coef, strict=True)},
            head_weights={t: float(v) for t, v in zip(self.tasks, head_w, strict=True)},
            grad_norms={t: float(v) for t, v in zip(self.tasks, norms, strict=True)},
            cosines=cosines,
            measured_step=last.step if last is not None else None,
            recomputed=recomputed,
            excluded=excluded,
            clamped=bool(last.clamped) if last is not None else False,
            ema_cosines=ema,
            grad_ratios={t: float(v) for t, v in zip(self.tasks, ratios, strict=True)},
            partial=partial,
            clip_factor=clip_factor,
            shared_grad_norm=shared_norm,
            head_clip_factors=head_factors,
        )


def _factor(norm: float, max_norm: float) -> float:
    """The factor `torch.nn.utils.clip_grad_norm_` applies for a total norm."""
    return min(1.0, max_norm / (norm + 1e-6)) if math.isfinite(norm) else math.nan


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of a list of tensors (one scalar tensor)."""
    return torch.nn.utils.get_total_norm([t.detach() for t in tensors])


def _grad_norm(params: Sequence[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return _norm(grads) if grads else torch.zeros(())


def _flatten(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """One flat vector [P] of per-parameter gradients (zeros where a parameter was unused)."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def _accumulate(params: Sequence[Tensor], flat: Tensor) -> None:
    """Add a flat gradient vector [P] into the parameters' `.grad` (creating it if needed)."""
    chunks = torch.split(flat, [p.numel() for p in params])
    for p, chunk in zip(params, chunks, strict=True):
        g = chunk.view_as(p)
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)


def _accumulate_each(params: Sequence[Tensor], grads: Sequence[Tensor | None], scale: float):
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g.detach() * scale
        else:
            p.grad.add_(g, alpha=scale)


class WeightedSum(MultiTaskMethod):
    """Linear scalarisation sum_i w_i L_i (one backward). Baseline every method must beat.

    update_every: 0 (default) never measures per-task gradients; N > 0 measures them every N steps
    for the report and the diagnostics only (costs K backward passes on those steps). Not
    adaptive: a loss without grad simply adds nothing; it never triggers a measurement.
    """

    name = "weighted_sum"
    adaptive = False

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float] | None = None,
        update_every: int = 0,
        ema_beta: float = 0.9,
    ) -> None:
        super().__init__(tasks, update_every, ema_beta)
        weights = dict(weights) if weights is not None else dict.fromkeys(self.tasks, 1.0)
        if set(weights) != set(self.tasks) or not all(
            math.isfinite(w) and w >= 0 for w in weights.values()
        ):
            raise ValueError(f"weights must give a finite weight >= 0 per task, got {weights}")
        self._coef = np.array([float(weights[t]) for t in self.tasks])
        self._head = self._coef.copy()
        self._weights = self._coef.copy()

    def _solve(self, gram, losses, active):
        return self._weights.copy(), self._weights.copy(), False


class UnityGrad(MultiTaskMethod):
    """UnityGrad / Nash-MTL: alpha solving (G G^T) alpha = 1/alpha; shared update G^T alpha.

    Heads receive alpha_i times their own gradient (the backward of sum_i alpha_i L_i), on
    measurement and reuse steps alike. eig_floor: clamp of `unitygrad_solve` (two tasks:
    cos >= -1 + eig_floor). update_every: recompute alpha every N steps and reuse it in between
    (N ~ 5-10 keeps a step within ~1.3x of a weighted-sum step).
    """

    name = "unitygrad"

    def __init__(
        self,
        tasks: Sequence[str],
        update_every: int = 1,
        eig_floor: float = 0.01,
        ema_beta: float = 0.9,
    ):
        super().__init__(tasks, update_every, ema_beta)
        if not 0.0 < eig_floor < 1.0:
            raise ValueError(f"eig_floor={eig_floor}; must be in (0, 1)")
        self.eig_floor = eig_floor
        self.last_residual = math.nan

    def _solve(self, gram, losses, active):
        sol = unitygrad_solve(gram, eig_floor=self.eig_floor, zero_tol=self.zero_tol)
        self.last_residual = sol.residual
        return sol.alpha, sol.alpha, sol.clamped


def select_parameters(
    named: Sequence[tuple[str, Tensor]], prefixes: str | Sequence[str]
) -> list[Tensor]:
    """Parameters whose name is one of `prefixes` or lies under one ("fra" selects "fra.0.x")."""
    prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    chosen = [p for n, p in named if any(n == pre or n.startswith(pre + ".") for pre in prefixes)]
    if not chosen:
        tops = sorted({n.split(".")[0] for n, _ in named})
        raise ValueError(
            f"layer {prefixes} matches no shared parameter; shared modules: {tops} (use a dotted "
            "name prefix such as 'fra' or 'neck.output')"
        )
    return chosen


class GradNorm(MultiTaskMethod):
    """GradNorm (Chen et al. 2018): learn loss weights so |grad_W w_i L_i| tracks the mean norm
    times the relative inverse training rate r_i^asymmetry.

    The network trains on sum_i w_i L_i, as in the paper: the shared update is sum_i w_i g_i and
    each head gets w_i times its own gradient. W, where the norms are measured, is the paper's
    "last shared layer": `layer` names it in a config as dotted parameter-name prefix(es) of the
    shared parameters (e.g. "fra", "neck.output"; resolved by `bind`), `layer_params` passes the
    tensors directly; neither = all shared parameters (K backward passes through the whole
    trunk; a layer is much cheaper because the per-task backward stops there). The weights take
    one Adam step (lr) per full measurement on sum_i |w_i n_i - target_i| (target held constant;
    its gradient is analytic) and are renormalised to sum to K; they stay >= 1e-3. L_i(0) is
    task i's loss at its first measurement; a partial measurement does not step the weights.
    """

    name = "gradnorm"

    def __init__(
        self,
        tasks: Sequence[str],
        asymmetry: float = 1.5,
        lr: float = 0.025,
        layer: str | Sequence[str] | None = None,
        layer_params: Sequence[Tensor] | None = None,
        update_every: int = 1,
        ema_beta: float = 0.9,
    ) -> None:
        super().__init__(tasks, update_every, ema_beta)
        if asymmetry < 0 or lr <= 0:
            raise ValueError(f"asymmetry={asymmetry} must be >= 0 and lr={lr} > 0")
        if layer is not None:
            names = [layer] if isinstance(layer, str) else layer
            if (
                not isinstance(names, Sequence)
                or not names
                or not all(isinstance(n, str) and n for n in names)
            ):
                raise ValueError(f"layer={layer!r}; must be a parameter-name prefix or a list")
            if layer_params is not None:
                raise ValueError("give GradNorm either layer or layer_params, not both")
            layer = layer if isinstance(layer, str) else list(layer)
        self.asymmetry = asymmetry
        self.layer = layer
        self.layer_params = list(layer_params) if layer_params is not None else None
        self._weights = torch.ones(len(self.tasks), dtype=torch.float64, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._weights], lr=lr)
        self._initial = np.full(len(self.tasks), np.nan)

    def bind(self, named_shared: Sequence[tuple[str, Tensor]]) -> None:
        if self.layer is not None:
            self.layer_params = select_parameters(named_shared, self.layer)

    def _measure_params(self, shared: list[Tensor]) -> list[Tensor]:
        if self.layer_params is None:
            if self.layer is not None:
                raise RuntimeError(f"GradNorm(layer={self.layer!r}) must be bound: call bind()")
            return shared
        layer = [p for p in self.layer_params if p.requires_grad]
        if not layer:
            raise ValueError("GradNorm layer_params contains no parameter that requires grad")
        return layer

    def _solve(self, gram, losses, active):
        k = len(self.tasks)
        current = self._weights.detach().numpy().copy()
        mask = np.zeros(k, dtype=bool)
        mask[list(active)] = True
        values = np.array([float(loss.detach()) for loss in losses])
        if self._initial is None:  # state of a run saved before L_i(0) became per task
            self._initial = np.full(k, np.nan)
        first = mask & np.isnan(self._initial)
        self._initial[first] = np.maximum(np.abs(values[first]), 1e-12)
        coef = np.where(mask, current, 0.0)
        if not mask.all():  # partial measurement: the balance of all tasks is not observed
            return coef, coef, False
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        rate = values / self._initial
        inv_rate = rate / rate.mean()
        target = (current * norms).mean() * np.power(np.maximum(inv_rate, 0.0), self.asymmetry)
        grad = np.sign(current * norms - target) * norms
        self._weights.grad = torch.as_tensor(grad)
        self._optimizer.step()
        with torch.no_grad():
            self._weights.clamp_(min=1e-3)
            self._weights.mul_(k / self._weights.sum())
        return coef, coef, False


class PCGrad(MultiTaskMethod):
    """PCGrad (Yu et al. 2020): project each task gradient off the ones it conflicts with.

    Shared update: sum of the projected gradients (random projection order, `seed` for
    reproducibility). Heads receive their own unscaled gradient (w = 1), on measurement and
    reuse steps alike.
    """

    name = "pcgrad"

    def __init__(
        self,
        tasks: Sequence[str],
        update_every: int = 1,
        seed: int | None = None,
        ema_beta: float = 0.9,
    ):
        super().__init__(tasks, update_every, ema_beta)
        self._rng = np.random.default_rng(seed)

    def _solve(self, gram, losses, active):
        coef = pcgrad_coefficients(gram, _random_orders(gram.shape[0], self._rng))
        return coef.sum(axis=0), np.ones(gram.shape[0]), False


class CAGrad(MultiTaskMethod):
    """CAGrad (Liu et al. 2021), c in [0, 1): conflict-averse update around the mean gradient.

    Heads receive their own unscaled gradient (w = 1), on measurement and reuse steps alike.
    """

    name = "cagrad"

    def __init__(
        self,
        tasks: Sequence[str],
        c: float = 0.4,
        rescale: bool = True,
        update_every: int = 1,
        ema_beta: float = 0.9,
    ) -> None:
        super().__init__(tasks, update_every, ema_beta)
        if not 0.0 <= c < 1.0:
            raise ValueError(f"c={c}; must be in [0, 1)")
        self.c = c
        self.rescale = rescale

    def _solve(self, gram, losses, active):
        coef = np.zeros(gram.shape[0])
        sub = gram[np.ix_(active, active)]
        if np.abs(sub).max() > 0:
            coef[list(active)] = cagrad_coefficients(sub, self.c, self.rescale)
        return coef, np.ones(gram.shape[0]), False


class MGDA(MultiTaskMethod):
    """MGDA (Sener & Koltun 2018): the shared update is the min-norm point sum_i w_i g_i of the
    gradients' convex hull; each head is trained on its own task's gradient, unscaled
    (Algorithm 2 of the paper), so a task whose min-norm weight is 0 still trains its head."""

    name = "mgda"

    def _solve(self, gram, losses, active):
        weights = np.zeros(gram.shape[0])
        sub = gram[np.ix_(active, active)]
        if np.abs(sub).max() > 0:
            weights[list(active)] = min_norm_weights(sub)
        return weights, np.ones(gram.shape[0]), False


METHODS: dict[str, type[MultiTaskMethod]] = {
    cls.name: cls for cls in (WeightedSum, UnityGrad, GradNorm, PCGrad, CAGrad, MGDA)
}


def build_method(name: str, tasks: Sequence[str], **kwargs: object) -> MultiTaskMethod:
    """Instantiate a method by name (keys of METHODS) with its keyword options."""
    if name not in METHODS:
        raise ValueError(f"unknown multitask method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name](tasks, **kwargs)
