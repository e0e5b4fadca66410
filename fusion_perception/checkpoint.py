"""The on-disk checkpoint: one file the node, the CLIs and the trainer exchange.

It holds everything needed to run the network without other files: weights, model config, class names,
input size, the thermal normalization the model was trained with, the score calibration if one was
fitted, and provenance. It is a plain
`torch.save` of tensors and builtin types, so loading uses `weights_only=True` and never unpickles code.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from fusion_perception import __version__
from fusion_perception.model import ModelConfig, build_model
from fusion_perception.score_calibration import ScoreCalibration
from fusion_perception.thermal import make_normalizer

FORMAT_NAME = "fusion_perception.checkpoint"
# 2: adds score_calibration; a file without one is still written as 1 (older readers load it).
FORMAT_VERSION = 2
DEFAULT_NORMALIZATION = {"scheme": "percentile", "params": {"p_lo": 1.0, "p_hi": 99.0, "ema": 0.9}}


class CheckpointError(ValueError):
    """A checkpoint file that is missing a field or whose fields disagree."""


@dataclass
class Checkpoint:
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    input_size: tuple[int, int]  # (width, height) the network runs at
    thermal_normalization: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    # What the scores mean (fusion-calibrate); None: the head's raw score. Not in the fingerprint.
    score_calibration: ScoreCalibration | None = None

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with these weights, in eval mode on `device`."""
        model = build_model(self.model_config)
        result = model.load_state_dict(self.state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                "state_dict: does not fit model_config "
                f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
            )
        return model.to(device).eval()

    def fingerprint(self) -> str:
        """sha256 of what fixes the network's forward pass: weights (names, dtypes, shapes,
        bytes), model config and input size. Exported artifacts record it, so a runtime can
        refuse one made from another checkpoint; class names and normalization are not in it."""
        digest = hashlib.sha256()
        graph = {"model": self.model_config.to_dict(), "input_size": list(self.input_size)}
        digest.update(json.dumps(graph, sort_keys=True).encode())
        for key in sorted(self.state_dict):
            tensor = self.state_dict[key].detach().cpu().contiguous()
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION if self.score_calibration is not None else 1,
            "model_config": self.model_config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "class_names": list(self.class_names),
            "input_size": list(self.input_size),
            "thermal_normalization": dict(self.thermal_normalization),
            "provenance": dict(self.provenance),
            **(
                {"score_calibration": self.score_calibration.to_dict()}
                if self.score_calibration is not None
                else {}
            ),
        }


def new_checkpoint(
    model: torch.nn.Module,
    model_config: ModelConfig,
    class_names: list[str],
    input_size: tuple[int, int],
    thermal_normalization: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Checkpoint:
    """Wrap a model's current weights; the normalization is validated by building it once.

    The backbone's initial weights file is recorded in provenance, not in the model config: the
    state dict already holds those weights, so the checkpoint never needs the file again.
    """
    normalization = make_normalizer_dict(thermal_normalization or DEFAULT_NORMALIZATION)
    stamp = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fusion_perception_version": __version__,
    }
    if model_config.backbone.weights is not None:
        stamp["backbone_initial_weights"] = model_config.backbone.weights
        model_config = replace(model_config, backbone=replace(model_config.backbone, weights=None))
    checkpoint = Checkpoint(
        model_config=model_config,
        state_dict=model.state_dict(),
        class_names=list(class_names),
        input_size=(int(input_size[0]), int(input_size[1])),
        thermal_normalization=normalization,
        provenance={**stamp, **(provenance or {})},
    )
    validate(checkpoint)
    return checkpoint


def make_normalizer_dict(spec: dict[str, Any]) -> dict[str, Any]:
    """Canonical {scheme, version, params} of a normalization spec (raises on a bad spec)."""
    params = dict(spec.get("params", {}))
    return make_normalizer(spec["scheme"], **params).to_dict()


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(checkpoint.to_dict(), tmp)
    tmp.replace(path)
    return path


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise CheckpointError(f"{key}: missing from checkpoint")
    value = data[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CheckpointError(f"{key}: expected {names}, found {type(value).__name__}")
    return value


def checkpoint_from_dict(data: Any) -> Checkpoint:
    """Validate a loaded dict field by field; each problem names its field."""
    if not isinstance(data, dict):
        raise CheckpointError(f"file: expected a dict of fields, found {type(data).__name__}")
    if data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"format: expected {FORMAT_NAME!r}, found {data.get('format')!r}")
    version = _require(data, "format_version", int)
    if version < 1:
        raise CheckpointError(f"format_version: must be >= 1, found {version}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"format_version: {version} is newer than this package reads ({FORMAT_VERSION}); "
            "upgrade fusion_perception"
        )
    raw_model_config = _require(data, "model_config", dict)
    try:
        model_config = ModelConfig.from_dict(raw_model_config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"model_config: {exc}") from exc
    state_dict = _require(data, "state_dict", dict)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"state_dict: entries are not tensors: {bad[:5]}")
    check_finite(state_dict)
    class_names = _require(data, "class_names", list)
    if not class_names or not all(isinstance(n, str) and n for n in class_names):
        raise CheckpointError(f"class_names: expected non-empty strings, found {class_names!r}")
    input_size = _require(data, "input_size", (list, tuple))
    if len(input_size) != 2 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise CheckpointError(f"input_size: expected [width, height] > 0, found {input_size!r}")
    normalization = _require(data, "thermal_normalization", dict)
    try:
        normalization = make_normalizer_dict(normalization)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"thermal_normalization: {exc}") from exc
    calibration = data.get("score_calibration")
    if calibration is not None:
        try:
            calibration = ScoreCalibration.from_dict(calibration)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc
    checkpoint = Checkpoint(
        model_config=model_config,
        state_dict=state_dict,
        class_names=list(class_names),
        input_size=(input_size[0], input_size[1]),
        thermal_normalization=normalization,
        provenance=_require(data, "provenance", dict),
        score_calibration=calibration,
    )
    validate(checkpoint)
    return checkpoint


def check_finite(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or Inf (a diverged training run), naming the tensors."""
    bad = []
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad.append((key, int(finite.numel() - finite.sum()), finite.numel()))
    if bad:
        named = ", ".join(f"{key} ({count} of {total})" for key, count, total in bad[:5])
        more = f" and {len(bad) - 5} more tensor(s)" if len(bad) > 5 else ""
        raise CheckpointError(
            f"state_dict: non-finite (NaN/Inf) weights in {named}{more}; the checkpoint comes "
            "from a diverged training run, use an earlier one"
        )


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` is plainly not a torch checkpoint (empty, text, other format), or None.

    torch.save writes a zip archive (``PK``); older files are a pickle (``0x80``).
    """
    with path.open("rb") as stream:
        head = stream.read(4096)
    if not head:
        return f"file: {path} is empty (0 bytes), not a checkpoint"
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            first = text.strip().splitlines()[0][:60] if text.strip() else ""
            return f"file: {path} is a text file (starts with {first!r}), not a checkpoint"
    return f"file: {path} is not a checkpoint (not a torch.save file; starts with {head[:8]!r})"


def validate(checkpoint: Checkpoint) -> None:
    """Cross-field checks: class count, input size, weights against the configured network."""
    num_classes = checkpoint.model_config.detection_head.num_classes
    if len(checkpoint.class_names) != num_classes:
        raise CheckpointError(
            f"class_names: {len(checkpoint.class_names)} names but model_config has "
            f"detection_head.num_classes={num_classes}"
        )
    model = build_model(checkpoint.model_config)
    stride = model.max_stride
    width, height = checkpoint.input_size
    if width % stride or height % stride:
        raise CheckpointError(
            f"input_size: {width}x{height} is not a multiple of the network stride {stride}"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint.state_dict))
    unexpected = sorted(set(checkpoint.state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"state_dict: does not fit model_config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    for key, tensor in expected.items():
        if checkpoint.state_dict[key].shape != tensor.shape:
            raise CheckpointError(
                f"state_dict: {key} has shape {tuple(checkpoint.state_dict[key].shape)}, "
                f"model_config expects {tuple(tensor.shape)}"
            )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; never unpickles arbitrary objects."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt"))
        hint = f"it holds {', '.join(inside[:5])}" if inside else "it holds no .pt file"
        raise CheckpointError(
            f"file: {path} is a directory, not a checkpoint file ({hint}); give the file's path"
        )
    if not path.is_file():
        raise CheckpointError(f"file: {path} does not exist")
    try:
        reason = _not_a_checkpoint(path)
    except OSError as exc:
        raise CheckpointError(f"file: {path} cannot be read ({exc.strerror or exc})") from None
    if reason is not None:
        raise CheckpointError(reason)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"file: {path} is not a readable checkpoint ({exc})") from exc
    return checkpoint_from_dict(data)
