"""Training-only networks that shape the fusion loss (TarDAL's critics, TSJNet's segmenter).

An `AuxiliaryLoss` wraps a criterion and adds its own term to the fusion task. Its networks have
their own optimizer: a subclass trains them with `step_apart` on the detached fused image, then
computes its term with them `frozen`, so the fusion network's backward pass never updates them.
They are saved with the run's state (`state_dict`) so a run resumes exactly, and never go into
the checkpoint the node loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fusion_training.losses import LossOutput


class AuxiliaryLoss:
    """``base``'s loss plus ``term`` in the fusion task (weighted like it: (1 - λ) in the task,
    1 in the logged ``fusion`` term). Subclasses set ``networks`` and ``optimizer`` and
    implement `term`."""

    networks: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer

    def __init__(self, base: Any) -> None:
        self.base = base
        self.weights = base.weights

    def term(
        self,
        fused: Tensor,
        rgb: Tensor,
        thermal: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        terms: dict[str, Tensor],
        train: bool,
    ) -> Tensor:
        """The weighted extra fusion term (float32 ``fused``); logs its parts into ``terms``;
        ``train``: update the networks first (training mode with gradients)."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        out: Mapping[str, Tensor],
        rgb: Tensor,
        thermal: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
    ) -> LossOutput:
        loss = self.base(model, out, rgb, thermal, targets)
        terms = dict(loss.terms)
        train = model.training and torch.is_grad_enabled()
        with torch.autocast(rgb.device.type, enabled=False):
            extra = self.term(out["fused"].float(), rgb, thermal, targets, terms, train)
        share = (1.0 - self.weights.detection_weight) * extra
        terms["fusion"] = loss.terms["fusion"] + extra
        terms["total"] = loss.terms["total"] + share
        return LossOutput(tasks={**loss.tasks, "fusion": loss.tasks["fusion"] + share}, terms=terms)

    def step_apart(self, loss: Tensor) -> Tensor:
        """One step of the networks' own optimizer on ``loss``; the loss, detached."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The networks take no gradient inside (the fusion network's pass)."""
        for network in self.networks.values():
            network.requires_grad_(False)
        try:
            yield
        finally:
            for network in self.networks.values():
                network.requires_grad_(True)

    def state_dict(self) -> dict[str, Any]:
        state = {name: net.state_dict() for name, net in self.networks.items()}
        state["optimizer"] = self.optimizer.state_dict()
        if hasattr(self.base, "state_dict"):
            state["base"] = self.base.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, network in self.networks.items():
            network.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        if "base" in state:
            self.base.load_state_dict(state["base"])
