"""`Columns`: a dataclass whose fields are numpy arrays of one length, one entry per row."""

import dataclasses
from typing import Sequence, Type, TypeVar

import numpy as np

T = TypeVar("T", bound="Columns")


class Columns:
    """Mixin for a @dataclass of equal-length numpy arrays: len, row selection, concatenation.
    A field may be None (a column this kind of rows does not have): it stays None."""

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def take(self: T, idx: np.ndarray) -> T:
        """The rows at `idx` (an index array or boolean mask), as a new object."""
        return type(self)(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
                             for f in dataclasses.fields(self)})

    @classmethod
    def concat(cls: Type[T], parts: Sequence[T]) -> T:
        def joined(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(**{f.name: joined(f.name) for f in dataclasses.fields(cls)})
