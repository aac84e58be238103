"""TrainConfig: everything that defines a training run, checked once when it is built.

The config travels inside every checkpoint (``to_metadata``), so a model rebuilds from its file
alone; ``from_metadata`` reads it back, files written by older versions included. Changing a
field means ``dataclasses.replace(config, ...)``, which checks the new value too. Errors name
the field (``beta must be ...``); the CLI shows the field as its flag.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from isa_core.choices import Arch, Objective, Precision, TcEstimator, parse_choice
from isa_core.errors import IsaError, field_error
from isa_core.priors import LpTree, PriorSpec
from isa_core.priors.spec import DEFAULT_SCALE

__all__ = ["MAX_SEED", "MAX_STEPS", "TrainConfig"]

MAX_SEED = 2**63 - 1  # seed + 2 and the per-epoch order seeds must fit torch's 64-bit seeds
# A run's length in optimizer steps. The paper's runs take thousands of steps; a billion is
# days of compute even at a millisecond a step, so anything longer is a typo, not a run.
MAX_STEPS = 10**9

# Renamed fields: the name older model files store -> today's name.
_RENAMED = {"estimator": "tc_estimator"}


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint so the model rebuilds from it."""

    data: str = "dsprites"
    tree: LpTree = field(default_factory=lambda: PriorSpec().resolve())  # text is parsed
    scale: float = DEFAULT_SCALE
    learn_exponents: bool = False
    exponent_lr: float = 1e-3
    objective: Objective = Objective.vae
    beta: float = 1.0
    gamma: float = 1.0
    tc_estimator: TcEstimator = TcEstimator.mss
    closed_form_kl: bool = False
    arch: Arch = Arch.mlp
    steps: int = 0  # total optimizer steps; 0 means derive from epochs
    epochs: float | None = 20.0  # None when the run was given steps
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0
    anneal_steps: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    precision: Precision = Precision.auto  # as asked; the run resolves auto per device
    compile: bool = True  # compiled likelihood and TC kernels where they pay (isa_core.compiled)

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming the field; turn text into enums and the tree."""
        for name, kind in _CHOICES.items():
            setattr(self, name, _choice(name, kind, getattr(self, name)))
        if isinstance(self.tree, str):
            self.tree = LpTree.parse(self.tree)
        elif not isinstance(self.tree, LpTree):
            raise field_error("tree", f"must be an L^p-nested tree, got {self.tree!r}")
        for name in ("beta", "gamma"):
            if not (_number(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise field_error(name, f"must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("lr", "exponent_lr", "scale"):
            value = _number(self, name)
            if not (math.isfinite(value) and value > 0):
                raise field_error(name, f"must be a positive finite number, got {value}")
        self._check_length()
        for name, low, meaning in _COUNTS:
            value = _whole(self, name)
            if value < low:
                raise field_error(name, f"must be >= {low}{meaning}, got {value}")
        if not 0 <= _whole(self, "seed") <= MAX_SEED:
            raise field_error("seed", f"must be a whole number from 0 to 2**63-1, got {self.seed}")
        if self.closed_form_kl and (self.tree != LpTree.normal(self.tree.n) or self.scale != 2.0):
            raise field_error(
                "closed_form_kl", "needs the normal prior N(0, I): all exponents 2 and scale 2"
            )

    def _check_length(self) -> None:
        """steps, or epochs when steps is 0; a run given steps stores no epochs."""
        steps = _whole(self, "steps")
        if steps > 0:
            self.epochs = None  # so collected configs show what was asked
        if steps < 0:
            raise field_error("steps", f"must be >= 1, got {steps}")
        if steps > MAX_STEPS:
            raise field_error(
                "steps",
                f"{steps:,} is more than the {MAX_STEPS:,} optimizer steps isa allows (days of "
                "compute even at a millisecond a step); give a smaller value",
            )
        if steps == 0:
            if self.epochs is None:
                raise IsaError("give the run's length: steps N or epochs E")
            epochs = _number(self, "epochs")
            if not (math.isfinite(epochs) and epochs > 0):
                raise field_error("epochs", f"must be a positive finite number, got {epochs}")

    def to_metadata(self) -> dict[str, Any]:
        """The config as JSON-able values (enums as their text, the tree as its spec)."""
        values = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            values[item.name] = str(value) if isinstance(value, StrEnum | LpTree) else value
        return values

    @classmethod
    def from_metadata(cls, raw: Any, source: str = "the metadata") -> TrainConfig:
        """The config stored in a model or state file; ``source`` names the file in errors.

        Fields missing from older files take their defaults, except ``precision``: files
        written before it existed were trained in fp32. Unknown fields are ignored.
        """
        damaged = "the file is damaged or was not written by isa train"
        if not isinstance(raw, dict):
            raise IsaError(f"{source}: its 'config' metadata is not an object; {damaged}")
        raw = {_RENAMED.get(name, name): value for name, value in raw.items()}
        values = {}
        for item in dataclasses.fields(cls):
            if item.name not in raw:
                continue
            value = raw[item.name]
            if not _stored_type_fits(item, value):
                raise IsaError(
                    f"{source}: its config has a malformed {item.name!r} ({value!r}); {damaged}"
                )
            values[item.name] = (
                float(value) if _stored_kind(item) is float and value is not None else value
            )
        values.setdefault("precision", "fp32")  # runs from before precision were all fp32
        if values["precision"] not in tuple(Precision):
            raise IsaError(
                f"{source}: its config has an unknown precision {values['precision']!r}; the "
                "file is damaged or was written by a newer isa"
            )
        try:
            return cls(**values)
        except IsaError as error:
            raise IsaError(
                f"{source}: its metadata does not describe a model ({error}); {damaged}"
            ) from None


_CHOICES: dict[str, type[StrEnum]] = {
    "objective": Objective,
    "tc_estimator": TcEstimator,
    "arch": Arch,
    "precision": Precision,
}
# (field, least value, what the least value means)
_COUNTS = (
    ("batch_size", 1, ""),
    ("anneal_steps", 0, " (0 turns it off)"),
    ("checkpoint_every", 1, ""),
    ("log_every", 1, ""),
)


def _choice(name: str, kind: type[StrEnum], value: Any) -> StrEnum:
    """``value`` as a member of ``kind``, or an error listing the choices."""
    return parse_choice(kind, name, value)


def _number(config: TrainConfig, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error(name, f"must be a number, got {value!r}")
    return value


def _whole(config: TrainConfig, name: str) -> int:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(name, f"must be a whole number, got {value!r}")
    return value


def _stored_kind(item: dataclasses.Field) -> type:
    """The JSON type a field is stored as: its default's (text for enums and the tree)."""
    default = (
        item.default if item.default_factory is dataclasses.MISSING else item.default_factory()
    )
    return str if isinstance(default, str | LpTree) else type(default)


def _stored_type_fits(item: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` (from JSON) has the type field ``item`` is stored as."""
    kind = _stored_kind(item)
    if item.name == "epochs" and value is None:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
