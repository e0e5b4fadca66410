"""Multitask gradient methods on shared parameters: UnityGrad and its baselines behind one interface.

Every method is used the same way as `loss.backward()`:

    optimizer.zero_grad()
    report = method.combine({"fusion": l_fus, "detection": l_det}, shared_params, step,
                            task_params={"fusion": fusion_head_params, "detection": det_head_params})
    optimizer.step()

`combine` runs the backward pass(es) and accumulates `.grad` on the shared parameters and on each
task's own parameters; a head only ever receives its own task's gradient (scaled by that task's
head weight). Each method boils down to coefficients c (the shared update is d = sum_i c_i g_i,
with g_i the gradient of task i's loss w.r.t. the shared parameters) and head weights w, computed
from the K x K Gram matrix of the g_i on *measurement* steps: every `update_every` steps (the first
call always measures). In between, the last c is reused and one backward of sum_i c_i L_i is all
that runs, so those steps cost exactly a weighted-sum step; that is how UnityGrad meets its cost goal.

A measurement step costs one `torch.autograd.grad` per task (retain_graph) through the shared
parameters; pass `task_params` and the heads' gradients come from the same calls, otherwise one
extra backward of sum_i w_i L_i provides them. Tasks whose loss does not require grad (e.g. a
detection batch without objects whose loss is a constant) or whose shared gradient is zero are
excluded at that measurement (coefficient 0) without NaN, and the next step measures again so
the exclusion is not carried over `update_every` steps.

UnityGrad (seeds_digest.md §1.4) is Nash-MTL's bargaining solution: alpha > 0 with
(G G^T) alpha = 1/alpha, so d = G^T alpha has norm sqrt(K) and improves every task to first order.
It is invariant to the scale of each loss, so its gradients come out unscaled even under an AMP
GradScaler; use it without a GradScaler (bf16 autocast needs none), otherwise `unscale_` would
divide them a second time. Its raw shared update has norm sqrt(K): clip or tune the learning rate
accordingly (Nash-MTL clips the shared gradient norm at 1). With DistributedDataParallel note that
`torch.autograd.grad` bypasses DDP's gradient all-reduce, so the per-task Gram is per-rank.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

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


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class StepReport:
    """What one `combine` call did.

    alpha: coefficient of each task's gradient in the shared update (loss weight for UnityGrad).
    head_weights: scale applied to each head's own-task gradient.
    grad_norms / cosines: |g_i| and cos(g_i, g_j) (i before j in task order) on the measured
        parameters at `measured_step` (NaN before the first measurement).
    recomputed: whether this step measured and recomputed the coefficients.
    excluded: tasks left out at the last measurement (no grad, or zero shared gradient).
    clamped: UnityGrad's clamp acted at the last measurement.
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

    def scalars(self) -> dict[str, float]:
        """Flat {name: value} for loggers (alpha/<task>, grad_norm/<task>, cos/<a>-<b>, clamped)."""
        out = {f"alpha/{t}": v for t, v in self.alpha.items()}
        out.update({f"grad_norm/{t}": v for t, v in self.grad_norms.items()})
        out.update({f"cos/{a}-{b}": v for (a, b), v in self.cosines.items()})
        out["clamped"] = float(self.clamped)
        return out


class MultiTaskMethod(ABC):
    """Shared machinery; subclasses implement `_solve(gram, losses, active)` -> (c, w, clamped).

    tasks: task names, in the order used for coefficients and reports.
    update_every: measure gradients and recompute coefficients every this many steps (>= 1).
    """

    name = "base"
    adaptive = True

    def __init__(self, tasks: Sequence[str], update_every: int = 1) -> None:
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"tasks must be unique non-empty names, got {tasks!r}")
        min_every = 1 if self.adaptive else 0
        if not isinstance(update_every, int) or update_every < min_every:
            raise ValueError(f"update_every={update_every!r}; must be an int >= {min_every}")
        self.tasks = tasks
        self.update_every = update_every
        k = len(tasks)
        self._coef = np.ones(k)
        self._head = np.ones(k)
        self._norms = np.full(k, np.nan)
        self._gram = np.full((k, k), np.nan)
        self._measured_step: int | None = None
        self._excluded: tuple[int, ...] = ()
        self._clamped = False
        self._remeasure = False

    @abstractmethod
    def _solve(
        self, gram: np.ndarray, losses: Sequence[Tensor], active: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Coefficients c [K], head weights w [K] and the clamp flag from the Gram [K, K]."""

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
        """Backpropagate the task losses; accumulate `.grad` on shared and task parameters."""
        loss_list = self._check_losses(losses)
        shared = [p for p in shared_params if p.requires_grad]
        if not shared:
            raise ValueError("shared_params contains no parameter that requires grad")
        heads = self._check_task_params(task_params)
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r}; must be an int >= 0")
        recomputed = self._due(step) and self._measure_and_apply(loss_list, shared, heads, step)
        if not recomputed:
            self._backward_weighted(loss_list, self._coef)
        return self._report(step, recomputed)

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

    def _measure_and_apply(
        self,
        losses: Sequence[Tensor],
        shared: list[Tensor],
        heads: dict[str, list[Tensor]] | None,
        step: int,
    ) -> bool:
        """Measure per-task gradients, recompute coefficients and apply them; False if no loss
        requires grad (then nothing is done)."""
        measure = self._measure_params(shared)
        collect_heads = heads is not None and measure is shared
        active = [i for i, loss in enumerate(losses) if loss.requires_grad]
        rows: dict[int, Tensor] = {}
        head_grads: dict[int, tuple[Tensor | None, ...]] = {}
        for pos, i in enumerate(active):
            own = heads[self.tasks[i]] if collect_heads else []
            retain = not collect_heads or pos < len(active) - 1
            grads = torch.autograd.grad(
                losses[i], [*measure, *own], retain_graph=retain, allow_unused=True
            )
            rows[i] = _flatten(grads[: len(measure)], measure)
            head_grads[i] = grads[len(measure) :]
        k = len(self.tasks)
        gram = np.zeros((k, k))
        if not active:  # no loss depends on any parameter: nothing to backpropagate
            return False
        G = torch.stack([rows[i] for i in active])  # [K_active, P]
        if G.dtype not in (torch.float32, torch.float64):
            G = G.float()  # fp16/bf16 Gram entries overflow or lose precision
        gram[np.ix_(active, active)] = (G @ G.T).double().cpu().numpy()
        if not np.isfinite(gram).all():
            bad = [self.tasks[i] for i in range(k) if not np.isfinite(gram[i, i])]
            raise FloatingPointError(f"non-finite gradient for task(s) {bad} at step {step}")
        coef, head_w, clamped = self._solve(gram, losses, active)
        coef, head_w = np.asarray(coef, dtype=np.float64), np.asarray(head_w, dtype=np.float64)
        if collect_heads:
            _accumulate(measure, sum(float(coef[i]) * rows[i] for i in active))
            for i in active:
                _accumulate_each(heads[self.tasks[i]], head_grads[i], float(head_w[i]))
        else:
            self._backward_weighted(losses, head_w)
            extra = [i for i in active if coef[i] != head_w[i]]
            if extra:
                _accumulate(measure, sum(float(coef[i] - head_w[i]) * rows[i] for i in extra))
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        self._coef, self._head, self._norms, self._gram = coef, head_w, norms, gram
        self._measured_step, self._clamped = step, clamped
        self._excluded = tuple(
            i for i in range(k) if i not in active or norms[i] == 0 or coef[i] == 0
        )
        # a task missing from this measurement would keep coefficient 0 for update_every steps
        self._remeasure = any(i not in active or norms[i] == 0 for i in range(k))
        return True

    def _report(self, step: int, recomputed: bool) -> StepReport:
        k = len(self.tasks)
        cosines = {}
        for i in range(k):
            for j in range(i + 1, k):
                den = self._norms[i] * self._norms[j]
                value = self._gram[i, j] / den if den > 0 else math.nan
                cosines[(self.tasks[i], self.tasks[j])] = float(value)
        return StepReport(
            step=step,
            alpha={t: float(v) for t, v in zip(self.tasks, self._coef, strict=True)},
            head_weights={t: float(v) for t, v in zip(self.tasks, self._head, strict=True)},
            grad_norms={t: float(v) for t, v in zip(self.tasks, self._norms, strict=True)},
            cosines=cosines,
            measured_step=self._measured_step,
            recomputed=recomputed,
            excluded=tuple(self.tasks[i] for i in self._excluded),
            clamped=self._clamped,
        )


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
    for the report only (costs K backward passes on those steps).
    """

    name = "weighted_sum"
    adaptive = False

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float] | None = None,
        update_every: int = 0,
    ) -> None:
        super().__init__(tasks, update_every)
        weights = dict(weights) if weights is not None else dict.fromkeys(self.tasks, 1.0)
        if set(weights) != set(self.tasks) or not all(
            math.isfinite(w) and w >= 0 for w in weights.values()
        ):
            raise ValueError(f"weights must give a finite weight >= 0 per task, got {weights}")
        self._coef = np.array([float(weights[t]) for t in self.tasks])
        self._head = self._coef.copy()

    def _solve(self, gram, losses, active):
        return self._coef, self._coef, False


class UnityGrad(MultiTaskMethod):
    """UnityGrad / Nash-MTL: alpha solving (G G^T) alpha = 1/alpha; shared update G^T alpha.

    Heads receive alpha_i times their own gradient (the backward of sum_i alpha_i L_i).
    eig_floor: clamp of `unitygrad_solve` (two tasks: cos >= -1 + eig_floor).
    update_every: recompute alpha every N steps and reuse it in between (N ~ 5-10 keeps a step
    within ~1.3x of a weighted-sum step).
    """

    name = "unitygrad"

    def __init__(self, tasks: Sequence[str], update_every: int = 1, eig_floor: float = 0.01):
        super().__init__(tasks, update_every)
        if not 0.0 < eig_floor < 1.0:
            raise ValueError(f"eig_floor={eig_floor}; must be in (0, 1)")
        self.eig_floor = eig_floor
        self.last_residual = math.nan

    def _solve(self, gram, losses, active):
        sol = unitygrad_solve(gram, eig_floor=self.eig_floor)
        self.last_residual = sol.residual
        return sol.alpha, sol.alpha, sol.clamped


class GradNorm(MultiTaskMethod):
    """GradNorm (Chen et al. 2018): learn loss weights so |grad_W w_i L_i| tracks the mean norm
    times the relative inverse training rate r_i^asymmetry.

    layer_params: the last shared layer W where norms are measured (default: all shared params;
    a single layer is much cheaper because the per-task backward then stops at that layer).
    The weights take one Adam step (lr) per measurement on sum_i |w_i n_i - target_i| (target
    held constant; its gradient is analytic) and are renormalised to sum to K; they stay >= 1e-3.
    """

    name = "gradnorm"

    def __init__(
        self,
        tasks: Sequence[str],
        asymmetry: float = 1.5,
        lr: float = 0.025,
        layer_params: Sequence[Tensor] | None = None,
        update_every: int = 1,
    ) -> None:
        super().__init__(tasks, update_every)
        if asymmetry < 0 or lr <= 0:
            raise ValueError(f"asymmetry={asymmetry} must be >= 0 and lr={lr} > 0")
        self.asymmetry = asymmetry
        self.layer_params = list(layer_params) if layer_params is not None else None
        self._weights = torch.ones(len(self.tasks), dtype=torch.float64, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._weights], lr=lr)
        self._initial: np.ndarray | None = None

    def _measure_params(self, shared: list[Tensor]) -> list[Tensor]:
        if self.layer_params is None:
            return shared
        layer = [p for p in self.layer_params if p.requires_grad]
        if not layer:
            raise ValueError("GradNorm layer_params contains no parameter that requires grad")
        return layer

    def _solve(self, gram, losses, active):
        k = len(self.tasks)
        current = self._weights.detach().numpy().copy()
        values = np.array([float(loss.detach()) for loss in losses])
        if self._initial is None:
            self._initial = np.maximum(np.abs(values), 1e-12)
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        mask = np.zeros(k, dtype=bool)
        mask[list(active)] = True
        if mask.any():
            rate = values / self._initial
            inv_rate = rate / rate[mask].mean()
            target = (current * norms)[mask].mean() * np.power(
                np.maximum(inv_rate, 0.0), self.asymmetry
            )
            grad = np.where(mask, np.sign(current * norms - target) * norms, 0.0)
            self._weights.grad = torch.as_tensor(grad)
            self._optimizer.step()
            with torch.no_grad():
                self._weights.clamp_(min=1e-3)
                self._weights.mul_(k / self._weights.sum())
        return current, current, False


class PCGrad(MultiTaskMethod):
    """PCGrad (Yu et al. 2020): project each task gradient off the ones it conflicts with.

    Shared update: sum of the projected gradients (random projection order, `seed` for
    reproducibility). Heads receive their own unscaled gradient on measurement steps; between
    measurements the last coefficients are reused for the whole backward.
    """

    name = "pcgrad"

    def __init__(self, tasks: Sequence[str], update_every: int = 1, seed: int | None = None):
        super().__init__(tasks, update_every)
        self._rng = np.random.default_rng(seed)

    def _solve(self, gram, losses, active):
        coef = pcgrad_coefficients(gram, _random_orders(gram.shape[0], self._rng))
        return coef.sum(axis=0), np.ones(gram.shape[0]), False


class CAGrad(MultiTaskMethod):
    """CAGrad (Liu et al. 2021), c in [0, 1): conflict-averse update around the mean gradient.

    Heads receive their own unscaled gradient on measurement steps.
    """

    name = "cagrad"

    def __init__(
        self, tasks: Sequence[str], c: float = 0.4, rescale: bool = True, update_every: int = 1
    ) -> None:
        super().__init__(tasks, update_every)
        if not 0.0 <= c < 1.0:
            raise ValueError(f"c={c}; must be in [0, 1)")
        self.c = c
        self.rescale = rescale

    def _solve(self, gram, losses, active):
        coef = np.zeros(gram.shape[0])
        if active:
            sub = gram[np.ix_(active, active)]
            if np.abs(sub).max() > 0:
                coef[list(active)] = cagrad_coefficients(sub, self.c, self.rescale)
        return coef, np.ones(gram.shape[0]), False


class MGDA(MultiTaskMethod):
    """MGDA (Sener & Koltun 2018): loss weights = the min-norm point of the gradients' convex hull."""

    name = "mgda"

    def _solve(self, gram, losses, active):
        weights = np.zeros(gram.shape[0])
        if active:
            sub = gram[np.ix_(active, active)]
            if np.abs(sub).max() > 0:
                weights[list(active)] = min_norm_weights(sub)
        return weights, weights, False


METHODS: dict[str, type[MultiTaskMethod]] = {
    cls.name: cls for cls in (WeightedSum, UnityGrad, GradNorm, PCGrad, CAGrad, MGDA)
}


def build_method(name: str, tasks: Sequence[str], **kwargs: object) -> MultiTaskMethod:
    """Instantiate a method by name (keys of METHODS) with its keyword options."""
    if name not in METHODS:
        raise ValueError(f"unknown multitask method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name](tasks, **kwargs)
