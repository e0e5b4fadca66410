"""Multitask gradient methods: UnityGrad solver properties and every method on a tiny two-head model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fusion_training import mtl
from torch import nn

TASKS = ("fusion", "detection")


def _pair_with_cosine(cos: float, n1: float, n2: float, dim: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(dim, generator=gen, dtype=torch.float64)
    u /= u.norm()
    v = torch.randn(dim, generator=gen, dtype=torch.float64)
    v -= (v @ u) * u
    v /= v.norm()
    return torch.stack([n1 * u, n2 * (cos * u + math.sqrt(1 - cos * cos) * v)])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_unitygrad_residual_on_random_gradients(k):
    gen = torch.Generator().manual_seed(k)
    G = (
        torch.randn(k, 40, generator=gen, dtype=torch.float64)
        * torch.logspace(-2, 1, k)[:, None].double()
    )
    alpha = mtl.unitygrad_weights(G)
    assert (alpha > 0).all()
    residual = (alpha * (G @ G.T @ alpha) - 1).abs().max()
    assert residual <= 1e-6
    d = alpha @ G
    assert float(d @ d) == pytest.approx(k, rel=1e-6)  # |G^T alpha|^2 = K
    assert torch.allclose(G @ d, 1 / alpha, rtol=1e-6)  # every task improves: g_i . d = 1/alpha_i


def test_unitygrad_orthogonal_gradients_get_inverse_norm_weights():
    q, _ = torch.linalg.qr(
        torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    for norms in ([2.0, 2.0, 2.0], [0.1, 3.0, 7.0]):
        G = q.T * torch.tensor(norms, dtype=torch.float64)[:, None]
        alpha = mtl.unitygrad_weights(G)
        assert torch.allclose(alpha, 1 / torch.tensor(norms, dtype=torch.float64), rtol=1e-9)
    G2 = q.T[:2] * 4.0
    assert torch.allclose(mtl.unitygrad_weights(G2), torch.full((2,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("cos", [-0.95, -0.3, 0.0, 0.6, 0.999, -0.9995])
def test_unitygrad_closed_form_equals_newton(cos):
    G = _pair_with_cosine(cos, 0.5, 20.0)
    closed = mtl.unitygrad_weights(G)
    newton = mtl.unitygrad_weights(G, solver="newton")
    assert torch.allclose(closed, newton, rtol=1e-8)
    expected = 1 / (torch.tensor([0.5, 20.0], dtype=torch.float64) * math.sqrt(1 + max(cos, -0.99)))
    assert torch.allclose(closed, expected, rtol=1e-8)


def test_unitygrad_strong_conflict_is_clamped_and_finite():
    G = _pair_with_cosine(-0.999, 1.0, 3.0)
    sol = mtl.unitygrad_solve((G @ G.T).numpy())
    assert sol.clamped
    assert np.isfinite(sol.alpha).all()
    assert sol.alpha * np.array([1.0, 3.0]) == pytest.approx([10.0, 10.0])  # 1/sqrt(eig_floor)
    assert not mtl.unitygrad_solve(
        (_pair_with_cosine(-0.9, 1.0, 3.0) @ _pair_with_cosine(-0.9, 1.0, 3.0).T).numpy()
    ).clamped
    G3 = torch.cat([G, torch.randn(1, G.shape[1], dtype=torch.float64)])
    sol3 = mtl.unitygrad_solve((G3 @ G3.T).numpy())
    assert np.isfinite(sol3.alpha).all() and (sol3.alpha > 0).all()


def test_unitygrad_zero_gradient_task_is_excluded_without_nan():
    G = _pair_with_cosine(0.2, 2.0, 5.0)
    G0 = torch.stack([G[0], torch.zeros_like(G[0]), G[1]])
    alpha = mtl.unitygrad_weights(G0)
    assert torch.isfinite(alpha).all()
    assert alpha[1] == 0
    assert torch.allclose(alpha[[0, 2]], mtl.unitygrad_weights(G), rtol=1e-12)
    single = mtl.unitygrad_weights(torch.stack([G[0], torch.zeros_like(G[0])]))
    assert torch.allclose(single, torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert torch.equal(mtl.unitygrad_weights(torch.zeros(2, 8)), torch.zeros(2))


def test_unitygrad_update_is_invariant_to_loss_scales():
    G = torch.randn(3, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    scaled = G * torch.tensor([[10.0], [0.01], [3.0]], dtype=torch.float64)
    d = mtl.unitygrad_weights(G) @ G
    assert torch.allclose(mtl.unitygrad_weights(scaled) @ scaled, d, rtol=1e-7)


def test_pcgrad_removes_the_conflicting_component():
    G = _pair_with_cosine(-0.7, 1.0, 2.0)
    projected = mtl.pcgrad_project(G, np.random.default_rng(0))
    assert float(projected[0] @ G[1]) >= -1e-12
    assert float(projected[1] @ G[0]) >= -1e-12
    assert float(projected[0] @ G[1]) == pytest.approx(0.0, abs=1e-12)
    agreeing = _pair_with_cosine(0.5, 1.0, 2.0)
    assert torch.allclose(mtl.pcgrad_project(agreeing), agreeing)  # nothing to remove
    G3 = torch.randn(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    p3 = mtl.pcgrad_project(G3, np.random.default_rng(1))
    coef = mtl.pcgrad_coefficients((G3 @ G3.T).numpy(), [[1, 2], [0, 2], [0, 1]])
    assert torch.allclose(
        torch.as_tensor(coef) @ G3, _pcgrad_reference(G3, [[1, 2], [0, 2], [0, 1]])
    )
    assert torch.isfinite(p3).all()


def _pcgrad_reference(G: torch.Tensor, orders) -> torch.Tensor:
    out = G.clone()
    for i, order in enumerate(orders):
        for j in order:
            dot = out[i] @ G[j]
            if dot < 0:
                out[i] = out[i] - dot / (G[j] @ G[j]) * G[j]
    return out


def test_cagrad_stays_in_its_ball_and_lifts_the_worst_task():
    G = _pair_with_cosine(-0.8, 1.0, 4.0).numpy()
    c = 0.4
    d = mtl.cagrad_coefficients(G @ G.T, c=c, rescale=False) @ G
    g0 = G.mean(axis=0)
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-6)
    assert (G @ d).min() > (G @ g0).min()


def test_mgda_min_norm_point_satisfies_its_optimality_condition():
    G = _pair_with_cosine(-0.5, 1.0, 3.0).numpy()
    w = mtl.min_norm_weights(G @ G.T)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    d = w @ G
    assert (G @ d).min() >= float(d @ d) * (1 - 1e-6)  # d is the min-norm point of the hull


class TwoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        self.fusion_head = nn.Linear(16, 4)
        self.det_head = nn.Linear(16, 3)

    def losses(self, x: torch.Tensor, det_scale: float = 1.0) -> dict[str, torch.Tensor]:
        feat = self.trunk(x)
        fusion = (self.fusion_head(feat) - x[:, :4]).square().mean()
        det = det_scale * (self.det_head(feat) + x[:, 3:]).abs().mean()
        return {"fusion": fusion, "detection": det}

    def groups(self):
        shared = list(self.trunk.parameters())
        heads = {
            "fusion": list(self.fusion_head.parameters()),
            "detection": list(self.det_head.parameters()),
        }
        return shared, heads


def _reference_grads(model: TwoHead, x: torch.Tensor):
    shared, heads = model.groups()
    losses = model.losses(x)
    per_task = {}
    for t in TASKS:
        own = heads[t]
        grads = torch.autograd.grad(losses[t], shared + own, retain_graph=True)
        per_task[t] = (grads[: len(shared)], grads[len(shared) :])
    return per_task


METHOD_FACTORIES = {
    "weighted_sum": lambda: mtl.WeightedSum(TASKS, {"fusion": 1.0, "detection": 0.5}),
    "unitygrad": lambda: mtl.UnityGrad(TASKS),
    "gradnorm": lambda: mtl.GradNorm(TASKS),
    "pcgrad": lambda: mtl.PCGrad(TASKS, seed=0),
    "cagrad": lambda: mtl.CAGrad(TASKS),
    "mgda": lambda: mtl.MGDA(TASKS),
}


@pytest.mark.parametrize("name", sorted(METHOD_FACTORIES))
@pytest.mark.parametrize("with_heads", [True, False])
def test_every_method_sets_finite_grads_and_heads_get_only_their_own(name, with_heads):
    model = TwoHead()
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    ref = _reference_grads(model, x)
    shared, heads = model.groups()
    method = METHOD_FACTORIES[name]()
    report = method.combine(model.losses(x), shared, 0, heads if with_heads else None)
    assert report.recomputed or name == "weighted_sum"
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for t in TASKS:
        for p, g in zip(heads[t], ref[t][1], strict=True):
            assert torch.allclose(p.grad, report.head_weights[t] * g, atol=1e-6)
    for k, p in enumerate(shared):
        expected = sum(report.alpha[t] * ref[t][0][k] for t in TASKS)
        assert torch.allclose(p.grad, expected, atol=1e-6)


def test_unitygrad_report_and_amortised_updates():
    model = TwoHead()
    shared, heads = model.groups()
    method = mtl.UnityGrad(TASKS, update_every=3)
    gen = torch.Generator().manual_seed(2)
    reports = []
    for step in range(6):
        model.zero_grad(set_to_none=True)
        x = torch.randn(16, 6, generator=gen)
        ref = _reference_grads(model, x)
        reports.append(method.combine(model.losses(x), shared, step, heads))
        g = torch.stack([torch.cat([v.reshape(-1) for v in ref[t][0]]) for t in TASKS])
        d = torch.cat([p.grad.reshape(-1) for p in shared])
        alpha = torch.tensor([reports[-1].alpha[t] for t in TASKS])
        assert torch.allclose(d, alpha @ g, atol=1e-6)
        if reports[-1].recomputed:
            assert float(d @ d) == pytest.approx(2.0, rel=1e-4)  # |G^T alpha|^2 = K
            norms = g.norm(dim=1)
            assert reports[-1].grad_norms["fusion"] == pytest.approx(float(norms[0]), rel=1e-5)
            cos = float(g[0] @ g[1] / (norms[0] * norms[1]))
            assert reports[-1].cosines[TASKS] == pytest.approx(cos, abs=1e-5)
    assert [r.recomputed for r in reports] == [True, False, False, True, False, False]
    assert reports[1].alpha == reports[0].alpha and reports[2].measured_step == 0
    assert set(reports[0].scalars()) >= {
        "alpha/fusion",
        "grad_norm/detection",
        "cos/fusion-detection",
    }


def test_loss_without_grad_is_excluded_without_nan():
    model = TwoHead()
    shared, heads = model.groups()
    x = torch.randn(8, 6)
    for method in (mtl.UnityGrad(TASKS), mtl.PCGrad(TASKS), mtl.CAGrad(TASKS), mtl.MGDA(TASKS)):
        model.zero_grad(set_to_none=True)
        losses = model.losses(x)
        losses["detection"] = torch.zeros(())  # batch without objects: constant loss
        report = method.combine(losses, shared, 0, heads)
        assert report.excluded == ("detection",)
        assert all(torch.isfinite(p.grad).all() for p in shared)
        assert all(math.isfinite(v) for v in report.alpha.values())
    amortised = mtl.UnityGrad(TASKS, update_every=10)
    losses = model.losses(x)
    losses["detection"] = torch.zeros(())
    assert amortised.combine(losses, shared, 0, heads).excluded == ("detection",)
    report = amortised.combine(model.losses(x), shared, 1, heads)
    assert report.recomputed and report.excluded == () and report.alpha["detection"] > 0
    assert not amortised.combine(model.losses(x), shared, 2, heads).recomputed
    nothing = {t: torch.zeros(()) for t in TASKS}
    assert not mtl.UnityGrad(TASKS).combine(nothing, shared, 0).recomputed


def test_gradnorm_lowers_the_weight_of_the_dominant_task():
    model = TwoHead()
    shared, heads = model.groups()
    method = mtl.GradNorm(TASKS, lr=0.05)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(4))
    for step in range(5):
        model.zero_grad(set_to_none=True)
        report = method.combine(model.losses(x, det_scale=20.0), shared, step, heads)
    weights = report.alpha
    assert sum(weights.values()) == pytest.approx(2.0)
    assert weights["detection"] < 1.0 < weights["fusion"]


def test_bad_arguments_raise_clear_errors():
    model = TwoHead()
    shared, _ = model.groups()
    losses = model.losses(torch.randn(4, 6))
    method = mtl.UnityGrad(TASKS)
    with pytest.raises(ValueError, match="keys"):
        method.combine({"fusion": losses["fusion"]}, shared, 0)
    with pytest.raises(ValueError, match="scalar"):
        method.combine({"fusion": losses["fusion"], "detection": torch.ones(3)}, shared, 0)
    with pytest.raises(ValueError, match="step"):
        method.combine(losses, shared, -1)
    with pytest.raises(ValueError, match="update_every"):
        mtl.UnityGrad(TASKS, update_every=0)
    with pytest.raises(ValueError, match="unknown multitask method"):
        mtl.build_method("nash", TASKS)
    with pytest.raises(ValueError, match="G must be"):
        mtl.unitygrad_weights(torch.zeros(5))
    assert isinstance(mtl.build_method("cagrad", TASKS, c=0.5), mtl.CAGrad)


def test_backward_passes_through_the_trunk_match_the_cost_model():
    """Count trunk backward traversals (wall-clock timing is too noisy on a shared CI machine).

    A weighted sum does one per step; UnityGrad does K on a measurement step when task_params is
    given (K + 1 without) and one on every other step, so update_every=10 costs 1.1 per step; the
    diagnostics and the clip add none.
    """
    model = TwoHead()
    shared, heads = model.groups()
    calls = []
    model.trunk[0].weight.register_hook(lambda g: calls.append(1))
    x = torch.randn(8, 6)

    def passes(method: mtl.MultiTaskMethod, steps: int, with_heads: bool = True) -> int:
        calls.clear()
        for step in range(steps):
            model.zero_grad(set_to_none=True)
            method.combine(model.losses(x), shared, step, heads if with_heads else None)
        return len(calls)

    assert passes(mtl.WeightedSum(TASKS), 10) == 10
    assert passes(mtl.UnityGrad(TASKS, update_every=10), 10) == 11
    assert passes(mtl.UnityGrad(TASKS), 4) == 8
    assert passes(mtl.UnityGrad(TASKS), 4, with_heads=False) == 12
    assert passes(mtl.GradNorm(TASKS, layer_params=list(model.trunk[2].parameters())), 4) == 4
    # reuse steps that rescale the heads (w != c) still cost one trunk pass
    assert passes(mtl.PCGrad(TASKS, update_every=10, seed=0), 10) == 11
    assert passes(mtl.CAGrad(TASKS, update_every=10), 10) == 11
    clipped = mtl.UnityGrad(TASKS, update_every=10)
    clipped.set_clip(0.5)
    assert passes(clipped, 10) == 11


# ----------------------------------------------------------------------------- faithful methods


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _grads(params) -> torch.Tensor:
    return _flat([p.grad for p in params])


@pytest.mark.parametrize("mode", ["shared", "each", "global"])
def test_clip_acts_on_the_shared_gradient_and_leaves_heads_alone(mode):
    model = TwoHead()
    shared, heads = model.groups()
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    ref = _reference_grads(model, x)
    method = mtl.UnityGrad(TASKS)
    method.set_clip(0.1, mode)
    report = method.combine(model.losses(x), shared, 0, heads)
    raw = sum(report.alpha[t] * _flat(ref[t][0]) for t in TASKS)
    assert float(raw.norm()) == pytest.approx(math.sqrt(2), rel=1e-4)  # UnityGrad: |d| = sqrt(K)
    assert report.shared_grad_norm == pytest.approx(math.sqrt(2), rel=1e-4)
    head_raw = {t: report.alpha[t] * _flat(ref[t][1]) for t in TASKS}
    if mode == "global":  # one factor for everything: the old behaviour
        total = math.sqrt(float(raw @ raw) + sum(float(h @ h) for h in head_raw.values()))
        assert report.clip_factor == pytest.approx(0.1 / total, rel=1e-4)
    else:
        assert report.clip_factor == pytest.approx(0.1 / math.sqrt(2), rel=1e-4)
    assert torch.allclose(_grads(shared), report.clip_factor * raw, atol=1e-6)
    for t in TASKS:
        got = _grads(heads[t])
        if mode == "shared":  # heads unscaled by the shared clip
            assert torch.allclose(got, head_raw[t], atol=1e-6)
            assert math.isnan(report.scalars()[f"clip_factor/{t}"])
        elif mode == "each":  # each head on its own
            factor = min(1.0, 0.1 / (float(head_raw[t].norm()) + 1e-6))
            assert report.head_clip_factors[t] == pytest.approx(factor, rel=1e-5)
            assert torch.allclose(got, factor * head_raw[t], atol=1e-6)
        else:
            assert torch.allclose(got, report.clip_factor * head_raw[t], atol=1e-6)
    assert report.scalars()["clip_factor"] == report.clip_factor
    with pytest.raises(ValueError, match="clip mode"):
        method.set_clip(1.0, "heads")
    with pytest.raises(ValueError, match="max_norm"):
        method.set_clip(0.0)


def test_without_clip_the_factor_is_one_and_the_norm_is_reported():
    model = TwoHead()
    shared, heads = model.groups()
    report = mtl.PCGrad(TASKS, seed=0).combine(model.losses(torch.randn(8, 6)), shared, 0, heads)
    assert report.clip_factor == 1.0
    assert report.shared_grad_norm == pytest.approx(float(_grads(shared).norm()), rel=1e-5)


def _no_objects(losses):
    return {**losses, "detection": losses["detection"].detach()}


def test_objectless_batch_leaves_the_last_alpha_untouched_and_is_not_reused():
    model = TwoHead()
    shared, heads = model.groups()
    method = mtl.UnityGrad(TASKS, update_every=5)
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(16, 6, generator=gen) for _ in range(6)]
    first = method.combine(model.losses(xs[0]), shared, 0, heads)
    assert first.recomputed and not first.partial
    kept = method.coefficients
    assert kept == first.alpha

    # step 1 (a reuse step) has no objects: measured over fusion alone, applied to this step only
    model.zero_grad(set_to_none=True)
    ref = _reference_grads(model, xs[1])
    report = method.combine(_no_objects(model.losses(xs[1])), shared, 1, heads)
    assert report.recomputed and report.partial and report.excluded == ("detection",)
    assert report.alpha["detection"] == 0.0 and report.head_weights["detection"] == 0.0
    g_fus = _flat(ref["fusion"][0])
    assert report.alpha["fusion"] == pytest.approx(1.0 / float(g_fus.norm()), rel=1e-5)
    assert torch.allclose(_grads(shared), report.alpha["fusion"] * g_fus, atol=1e-6)
    assert all(p.grad is None for p in heads["detection"])  # no detection signal at all
    assert method.coefficients == kept  # the previous measurement's alpha is untouched
    assert report.scalars()["excluded/detection"] == 1.0 and report.scalars()["partial"] == 1.0

    # the next step measures again instead of reusing an alpha across the objectless step
    model.zero_grad(set_to_none=True)
    after = method.combine(model.losses(xs[2]), shared, 2, heads)
    assert after.recomputed and not after.partial and after.excluded == ()
    assert after.alpha["detection"] > 0 and method.coefficients == after.alpha
    model.zero_grad(set_to_none=True)
    assert not method.combine(model.losses(xs[3]), shared, 3, heads).recomputed
    summary = method.summary()
    assert summary["excluded_steps"] == {"fusion": 0, "detection": 1}
    assert summary["partial_measurements"] == 1 and summary["measurements"] == 3
    assert summary["alpha"]["detection"]["count"] == 2  # partial measurements carry no alpha


def test_weighted_sum_keeps_its_weights_on_a_batch_without_objects():
    model = TwoHead()
    shared, heads = model.groups()
    method = mtl.WeightedSum(TASKS, {"fusion": 1.0, "detection": 0.5}, update_every=1)
    x = torch.randn(8, 6)
    report = method.combine(_no_objects(model.losses(x)), shared, 0, heads)
    assert report.excluded == ("detection",)
    assert method.coefficients == {"fusion": 1.0, "detection": 0.5}
    assert method.combine(model.losses(x), shared, 1, heads).alpha["detection"] == 0.5


class Aligned(TwoHead):
    """Detection's shared gradient is 10x fusion's: MGDA's min-norm point is fusion's alone."""

    def losses(self, x: torch.Tensor, det_scale: float = 1.0) -> dict[str, torch.Tensor]:
        feat = self.trunk(x)
        common = (feat - 0.5).square().mean()
        fusion = common + (self.fusion_head(feat.detach()) - x[:, :4]).square().mean()
        det = 10.0 * common + (self.det_head(feat.detach()) + x[:, 3:]).abs().mean()
        return {"fusion": fusion, "detection": det}


def test_mgda_heads_get_their_own_gradient_even_with_zero_weight():
    model = Aligned()
    shared, heads = model.groups()
    method = mtl.MGDA(TASKS, update_every=2)
    gen = torch.Generator().manual_seed(6)
    for step in range(4):  # measurement and reuse steps
        model.zero_grad(set_to_none=True)
        x = torch.randn(16, 6, generator=gen)
        ref = _reference_grads(model, x)
        report = method.combine(model.losses(x), shared, step, heads)
        assert report.recomputed == (step % 2 == 0)
        assert report.alpha["detection"] == 0.0 and report.alpha["fusion"] == pytest.approx(1.0)
        assert report.head_weights == {"fusion": 1.0, "detection": 1.0}
        for t in TASKS:
            own = _flat(ref[t][1])
            assert float(own.norm()) > 0
            assert torch.allclose(_grads(heads[t]), own, atol=1e-6), (step, t)
        assert torch.allclose(_grads(shared), _flat(ref["fusion"][0]), atol=1e-6)


HEAD_CASES = {
    "unitygrad": lambda: mtl.UnityGrad(TASKS, update_every=3),
    "pcgrad": lambda: mtl.PCGrad(TASKS, update_every=3, seed=0),
    "cagrad": lambda: mtl.CAGrad(TASKS, update_every=3),
    "mgda": lambda: mtl.MGDA(TASKS, update_every=3),
    "gradnorm": lambda: mtl.GradNorm(TASKS, update_every=3),
}


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_heads_are_weighted_the_same_on_measurement_and_reuse_steps(name):
    model = TwoHead()
    shared, heads = model.groups()
    method = HEAD_CASES[name]()
    gen = torch.Generator().manual_seed(7)
    weights = []
    for step in range(6):
        model.zero_grad(set_to_none=True)
        x = torch.randn(16, 6, generator=gen)
        ref = _reference_grads(model, x)
        report = method.combine(model.losses(x), shared, step, heads)
        assert report.recomputed == (step % 3 == 0)
        if not report.recomputed:
            assert report.head_weights == weights[-1]
        weights.append(report.head_weights)
        for t in TASKS:
            expected = report.head_weights[t] * _flat(ref[t][1])
            assert torch.allclose(_grads(heads[t]), expected, atol=1e-6), (step, t)
        d = sum(report.alpha[t] * _flat(ref[t][0]) for t in TASKS)
        assert torch.allclose(_grads(shared), d, atol=1e-6)
    if name in ("pcgrad", "cagrad", "mgda"):  # heads always get their own unscaled gradient
        assert all(w == {"fusion": 1.0, "detection": 1.0} for w in weights)


def test_reuse_keeps_what_was_accumulated_before():
    model = TwoHead()
    shared, heads = model.groups()
    method = mtl.PCGrad(TASKS, update_every=2, seed=0)
    x = torch.randn(8, 6)
    method.combine(model.losses(x), shared, 0, heads)
    model.zero_grad(set_to_none=True)
    for p in heads["fusion"]:
        p.grad = torch.ones_like(p)
    ref = _reference_grads(model, x)
    method.combine(model.losses(x), shared, 1, heads)
    assert torch.allclose(_grads(heads["fusion"]), 1.0 + _flat(ref["fusion"][1]), atol=1e-6)


def test_gradnorm_layer_is_named_like_a_config_option():
    model = TwoHead()
    shared, heads = model.groups()
    named = [(n, p) for n, p in model.named_parameters() if n.startswith("trunk.")]
    method = mtl.build_method("gradnorm", TASKS, layer="trunk.2")
    with pytest.raises(RuntimeError, match="bind"):
        method.combine(model.losses(torch.randn(4, 6)), shared, 0, heads)
    method.bind(named)
    assert method.layer_params == list(model.trunk[2].parameters())
    both = mtl.GradNorm(TASKS, layer=["trunk.0", "trunk.2"])
    both.bind(named)
    assert len(both.layer_params) == 4
    with pytest.raises(ValueError, match="matches no shared parameter"):
        mtl.GradNorm(TASKS, layer="head").bind(named)
    with pytest.raises(ValueError, match="layer"):
        mtl.GradNorm(TASKS, layer=3)
    with pytest.raises(ValueError, match="not both"):
        mtl.GradNorm(TASKS, layer="trunk", layer_params=list(model.trunk.parameters()))
    # the norms are measured on that layer only (one trunk pass per step, as with layer_params)
    calls = []
    model.trunk[0].weight.register_hook(lambda g: calls.append(1))
    x = torch.randn(8, 6)
    ref = _reference_grads(model, x)
    calls.clear()
    report = method.combine(model.losses(x), shared, 0, heads)
    assert len(calls) == 1
    layer_norm = float(_flat(ref["fusion"][0][2:4]).norm())
    assert report.grad_norms["fusion"] == pytest.approx(layer_norm, rel=1e-5)
    d = sum(report.alpha[t] * _flat(ref[t][0]) for t in TASKS)
    assert torch.allclose(_grads(shared), d, atol=1e-6)


def test_ema_cosine_and_gradient_ratios_are_reported_on_measurement_steps():
    model = TwoHead()
    shared, heads = model.groups()
    beta = 0.5
    method = mtl.UnityGrad(TASKS, update_every=2, ema_beta=beta)
    gen = torch.Generator().manual_seed(8)
    ema = {t: torch.zeros(sum(p.numel() for p in shared)) for t in TASKS}
    for step in range(6):
        model.zero_grad(set_to_none=True)
        x = torch.randn(16, 6, generator=gen)
        ref = _reference_grads(model, x)
        report = method.combine(model.losses(x), shared, step, heads)
        if report.recomputed:
            for t in TASKS:
                ema[t] = beta * ema[t] + (1 - beta) * _flat(ref[t][0])
                ratio = float(_flat(ref[t][0]).norm() / _flat(ref[t][1]).norm())
                assert report.grad_ratios[t] == pytest.approx(ratio, rel=1e-5)
            expected = float(ema["fusion"] @ ema["detection"])
            expected /= float(ema["fusion"].norm() * ema["detection"].norm())
            last = report.ema_cosines[TASKS]
            assert last == pytest.approx(expected, abs=1e-5)
        else:  # reuse steps repeat the last measurement, computed nothing new
            assert report.ema_cosines[TASKS] == last and report.measured_step == step - 1
        scalars = report.scalars()
        assert {"ema_cos/fusion-detection", "grad_ratio/fusion", "grad_ratio/detection"} <= set(
            scalars
        )
    summary = method.summary()
    assert summary["measurements"] == 3 and summary["steps"] == 6
    assert summary["ema_cosine"]["fusion-detection"]["last"] == pytest.approx(last)
    assert summary["ema_cosine"]["fusion-detection"]["count"] == 3


def _monitor_with(cosines):
    monitor = mtl.MTLMonitor(TASKS, beta=0.0)
    for c in cosines:
        G = _pair_with_cosine(c, 1.0, 2.0).float()
        ema = monitor.update_ema({0: G[0], 1: G[1]})
        monitor.record_measurement(ema, ema, np.ones(2), np.ones(2), partial=False)
    return monitor


def test_premise_verdict_follows_the_averaged_cosine():
    holds, line = _monitor_with([0.3, 0.1, 0.05]).premise()
    assert holds is False and line.startswith("Nash's premise (conflicting gradients) does not")
    holds, line = _monitor_with([0.3, -0.2, 0.4]).premise()
    assert holds is True and "holds at times" in line
    assert mtl.MTLMonitor(TASKS).premise()[0] is None
    # the verdict ignores the first 1 / (1 - beta) measurements when there are more
    monitor = mtl.MTLMonitor(TASKS, beta=0.5)
    assert monitor.warmup == 2
    for c in [-0.5, 0.9, 0.9, 0.9, 0.9, 0.9]:
        G = _pair_with_cosine(c, 1.0, 1.0).float()
        cos = monitor.update_ema({0: G[0], 1: G[1]})
        monitor.record_measurement(cos, cos, np.ones(2), np.ones(2), partial=False)
    assert monitor.ema_cos["fusion-detection"].low < 0
    assert monitor.premise()[0] is False


def test_mgda_reuse_with_a_zero_weight_costs_one_trunk_pass():
    model = Aligned()
    shared, heads = model.groups()
    calls = []
    model.trunk[0].weight.register_hook(lambda g: calls.append(1))
    method = mtl.MGDA(TASKS, update_every=10)
    x = torch.randn(8, 6)
    for step in range(10):
        model.zero_grad(set_to_none=True)
        assert method.combine(model.losses(x), shared, step, heads).alpha["detection"] == 0.0
    assert len(calls) == 11
