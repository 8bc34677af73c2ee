"""What xaibench knows about a model besides its weights: modality, input shape, classes, scaling."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MODALITIES = ("image", "tabular", "sequence", "text")
SAMPLE_RANK = {"tabular": 1, "sequence": 2, "image": 3}  # axes of one sample: (F,), (C, L), (C, H, W)


@dataclass(frozen=True)
class ModelMeta:
    """Metadata of a model; every field may be unknown (None) and inferred from data or flags.

    Attributes:
        modality: "image" (C, H, W), "tabular" (F,) or "sequence" (C, L).
        input_shape: the shape of one sample, without the batch axis.
        class_names: one name per output logit.
        value_range: (low, high) of raw inputs, before normalisation.
        mean, std: per-channel normalisation the model expects: model input = (raw - mean) / std.
        dataset: the built-in dataset the model was trained on (default data for commands).
        feature_names: names of tabular features.
    """

    modality: str | None = None
    input_shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dataset: str | None = None
    feature_names: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); what checkpoints and run.json store."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Inverse of ``to_dict``; unknown keys are ignored so newer files still load."""
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)

    def merged(self, **overrides: Any) -> ModelMeta:
        """A copy where every non-None override replaces the stored value."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
