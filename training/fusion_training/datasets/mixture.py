"""Several datasets trained on as one: the ``mixture`` format of ``build_dataset``.

Real annotated pairs are few, so a run may combine a real paired folder with synthetic scenes,
or a labelled set with unlabelled fusion-only pairs. Each part stays the dataset its own format
builds, with its own thermal normalization, because raw thermal of different sources means
different things (8-bit grey divided by 255 vs. synthetic raw counts over their fixed range).
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .base import Item, Transform, class_key
from .files import DatasetError

ROLES = ("train", "val")
PART_KEYS = ("format", "root", "options", "repeat", "train", "val")
# never handed from the mixture to its parts: each part normalizes and transforms on its own terms
NOT_FORWARDED = ("thermal_normalization", "transform")
# synthetic validation scenes come from seed + this (the eval CLI's and demo recipe's convention)
VAL_SEED_OFFSET = 1000


@dataclass(frozen=True)
class PartSpec:
    """One checked entry of a mixture's ``parts`` list (see :class:`MixtureDataset`)."""

    format: str
    root: str | None
    options: dict[str, Any]
    repeat: int
    train: dict[str, Any]
    val: dict[str, Any] | None  # None: the part is left out of validation


def _fail(key: str, value: Any, expectation: str) -> None:
    raise ValueError(f"{key} must be {expectation}, got {value!r}")


def part_accepts(format_key: str) -> list[str]:
    """Options a part of ``format_key`` may set (its format's options without ``transform``)."""
    from .factory import FORMATS, accepted_options

    return [n for n in accepted_options(FORMATS[format_key]) if n != "transform"]


def parse_parts(parts: Any) -> tuple[PartSpec, ...]:
    """Check a ``parts`` list; errors start with the part's key, e.g. ``parts[1].format``."""
    from .factory import FORMATS, canonical_format

    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or not parts:
        _fail("parts", parts, "a non-empty list of part mappings")
    specs = []
    for i, part in enumerate(parts):
        key = f"parts[{i}]"
        if not isinstance(part, Mapping):
            _fail(key, part, "a mapping with format, root, options, repeat, train, val")
        unknown = sorted(set(part) - set(PART_KEYS))
        if unknown:
            _fail(f"{key}.{unknown[0]}", part[unknown[0]], f"one of the part keys {PART_KEYS}")
        try:
            name = canonical_format(part.get("format"))
        except ValueError:
            name = None
        if name is None or name == "mixture":
            choices = sorted(set(FORMATS) - {"mixture"})
            _fail(f"{key}.format", part.get("format"), f"one of {choices}")
        root = part.get("root")
        if name == "synthetic" and root is not None:
            _fail(f"{key}.root", root, "null (absent) for the synthetic format")
        if name != "synthetic" and not isinstance(root, (str, Path)):
            _fail(f"{key}.root", root, f"a folder for format {name!r}")
        accepted = part_accepts(name)
        sections: dict[str, dict[str, Any] | None] = {}
        for section in ("options", "train", "val"):
            value = part.get(section, {})
            if section == "val" and isinstance(value, bool):
                sections[section] = {} if value else None
                continue
            if not isinstance(value, Mapping):
                what = "a mapping, or false to leave the part out of validation"
                _fail(f"{key}.{section}", value, what if section == "val" else "a mapping")
            for option in value:
                if option not in accepted:
                    _fail(
                        f"{key}.{section}.{option}",
                        value[option],
                        f"an option of dataset format {name!r} ({sorted(accepted)})",
                    )
            sections[section] = dict(value)
        repeat = part.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            _fail(f"{key}.repeat", repeat, "an integer >= 1")
        specs.append(
            PartSpec(
                name,
                None if root is None else str(root),
                sections["options"] or {},
                repeat,
                sections["train"] or {},
                sections["val"],
            )
        )
        _check_seeds(key, specs[-1])
    return tuple(specs)


def _format_default(format_key: str, option: str) -> Any:
    from .factory import FORMATS

    parameter = inspect.signature(FORMATS[format_key]).parameters.get(option)
    return None if parameter is None else parameter.default


def _seeded_without_split(format_key: str) -> bool:
    """Parts whose format has no ``split`` but a ``seed`` (synthetic) split by seed instead."""
    accepted = part_accepts(format_key)
    return "split" not in accepted and "seed" in accepted


def _check_seeds(key: str, spec: PartSpec) -> None:
    if spec.val is None or not _seeded_without_split(spec.format) or "seed" not in spec.val:
        return
    train_seed = {**spec.options, **spec.train}.get("seed", _format_default(spec.format, "seed"))
    if spec.val["seed"] == train_seed:
        _fail(f"{key}.val.seed", spec.val["seed"], f"different from the training seed {train_seed}")


def part_options(
    spec: PartSpec,
    role: str | None,
    shared: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The keyword options a part is built with in ``role``, or None when it sits out.

    Precedence: ``defaults`` < ``shared`` (each only where the part's format accepts the key) <
    the part's ``options`` < the part's mapping for ``role``.
    """
    if role == "val" and spec.val is None:
        return None
    accepted = set(part_accepts(spec.format))
    accepted -= set(NOT_FORWARDED)
    offered = {k: v for k, v in {**defaults, **shared}.items() if k in accepted}
    own = spec.train if role == "train" else spec.val if role == "val" else {}
    options = {**offered, **spec.options, **(own or {})}
    val_seed_given = "seed" in (spec.val or {}) or "seed" in shared
    if role == "val" and _seeded_without_split(spec.format) and not val_seed_given:
        base = options.get("seed", _format_default(spec.format, "seed"))
        options["seed"] = int(base) + VAL_SEED_OFFSET
    return options


def _normalization(dataset: Dataset) -> dict[str, Any] | str:
    normalizer = getattr(dataset, "_normalizer", None)
    return normalizer.to_dict() if normalizer is not None else "8-bit / 255"


class MixtureDataset(Dataset):
    """The items of several datasets (parts) in one dataset.

    parts: a list of mappings, each with
      ``format``   a format name of ``build_dataset`` other than mixture (required);
      ``root``     its folder (absent or null for synthetic);
      ``options``  keyword options of that format, for both roles (``thermal_normalization``
                   belongs here: nothing normalizes all parts alike);
      ``repeat``   integer >= 1: the part's items appear this many times per training epoch
                   (default 1; in the val role every item counts once);
      ``train`` / ``val``: options for that role only, over ``options``; ``val: false`` leaves
                   the part out of validation (e.g. unlabelled or synthetic parts).
    role: ``train``, ``val`` or None (no role mapping applies; every part takes part).
    shared (the other keyword options): offered to every part whose format accepts the key,
      e.g. ``split: val`` from a training YAML's ``dataset.val``; a key no part accepts is an
      error, and ``thermal_normalization`` / ``transform`` are refused.
    defaults: like ``shared`` but never an error (the trainer's rotated, width, height, classes).

    Per part, precedence is defaults < shared < ``options`` < the role's mapping. In the val role
    a part that splits by seed rather than by ``split`` (synthetic) draws its scenes from
    ``seed + 1000`` unless ``val`` (the part's or a shared option) sets ``seed``, so validation
    never repeats training scenes; a part ``val.seed`` equal to its training seed is an error.

    Every part must have the same class names (compared as ``class_key``, in order) and the same
    ``rotated``. Items are the parts' own (ids unchanged, ``labelled`` kept), part after part,
    each part ``repeat`` times; ``transform`` maps every item. Attributes: ``class_names``,
    ``rotated``, ``parts`` (the built datasets), ``part_index`` (each one's index in ``parts``),
    ``repeats`` and ``manifest`` (a summary of the parts, for logs and checks).
    """

    def __init__(
        self,
        *,
        parts: Sequence[Mapping[str, Any]],
        role: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        transform: Transform | None = None,
        **shared: Any,
    ) -> None:
        from .factory import build_dataset

        if role not in (None, *ROLES):
            _fail("role", role, f"one of {ROLES} or None")
        specs = parse_parts(parts)
        for key in NOT_FORWARDED:
            if key in shared:
                raise ValueError(
                    f"{key}: a mixture does not hand one {key} to all its parts; set it per part "
                    f"(parts[i].options.{key})"
                )
        for key, value in shared.items():
            if not any(key in part_accepts(spec.format) for spec in specs):
                formats = sorted({spec.format for spec in specs})
                _fail(key, value, f"an option of at least one part's format {formats}")
        self.role = role
        self.transform = transform
        self.parts: list[Dataset] = []
        self.part_index: list[int] = []
        self.repeats: list[int] = []
        for i, spec in enumerate(specs):
            options = part_options(spec, role, shared, defaults or {})
            if options is None:
                continue
            try:
                dataset = build_dataset(spec.format, spec.root, **options)
            except DatasetError:
                raise  # names its file already
            except (TypeError, ValueError) as error:
                raise ValueError(f"parts[{i}] ({spec.format}): {error}") from error
            self._check_compatible(i, spec, dataset)
            self.parts.append(dataset)
            self.part_index.append(i)
            self.repeats.append(1 if role == "val" else spec.repeat)
        if not self.parts:
            raise ValueError(
                f"parts: every part has val: false, so there is nothing for the {role} role; "
                "drop the validation set instead (dataset.val: null)"
            )
        self.class_names = tuple(self.parts[0].class_names)
        self.rotated = bool(self.parts[0].rotated)
        self._specs = specs
        self._ends = np.cumsum([len(d) * r for d, r in zip(self.parts, self.repeats, strict=True)])

    def _check_compatible(self, i: int, spec: PartSpec, dataset: Dataset) -> None:
        if not self.parts:
            return
        first, j = self.parts[0], self.part_index[0]
        names, reference = list(dataset.class_names), list(first.class_names)
        if [class_key(n) for n in names] != [class_key(n) for n in reference]:
            raise ValueError(
                f"parts[{i}] ({spec.format}): classes {names} differ from parts[{j}]'s "
                f"{reference}; every part must list the same classes in the same order"
            )
        if bool(dataset.rotated) != bool(first.rotated):
            kind = "rotated" if dataset.rotated else "horizontal"
            raise ValueError(
                f"parts[{i}] ({spec.format}): boxes are {kind} but parts[{j}]'s are not; every "
                "part must use one box kind"
            )

    @property
    def manifest(self) -> dict[str, Any]:
        """What the mixture is made of (no ``thermal_normalization``: it differs per part)."""
        parts = []
        for dataset, i, repeat in zip(self.parts, self.part_index, self.repeats, strict=True):
            spec = self._specs[i]
            parts.append(
                {
                    "part": i,
                    "format": spec.format,
                    "root": spec.root,
                    "items": len(dataset),
                    "repeat": repeat,
                    "thermal_normalization": _normalization(dataset),
                }
            )
        return {
            "format": "mixture",
            "classes": list(self.class_names),
            "rotated": self.rotated,
            "role": self.role,
            "parts": parts,
        }

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(position in ``parts``, index in that part) of mixture item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a mixture of length {len(self)}")
        position = bisect.bisect_right(self._ends, index)
        start = int(self._ends[position - 1]) if position else 0
        return position, (index - start) % len(self.parts[position])

    def __getitem__(self, index: int) -> Item:
        position, local = self.locate(int(index))
        item = self.parts[position][local]
        item.setdefault("labelled", True)
        return self.transform(item) if self.transform is not None else item
