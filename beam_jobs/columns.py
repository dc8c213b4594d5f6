"""`Columns`: a dataclass whose fields are numpy arrays of one length, one entry per row."""

import dataclasses
from typing import Sequence, Type, TypeVar

import numpy as np

T = TypeVar("T", bound="Columns")


class Columns:
    """Mixin for a @dataclass of equal-length numpy arrays: len, row selection, concatenation."""

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def take(self: T, idx: np.ndarray) -> T:
        """The rows at `idx` (an index array or boolean mask), as a new object."""
        return type(self)(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    @classmethod
    def concat(cls: Type[T], parts: Sequence[T]) -> T:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})
