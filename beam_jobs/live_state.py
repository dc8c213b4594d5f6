"""What the live job keeps per recording, and when a row is final: plain numpy, no Beam here
(beam_jobs.live_steps's stateful DoFn holds a `RecordingState` per key and calls these).

A row may arrive late and out of order, by up to `max_delay` seconds of its recording's time: once
a row of time T has arrived, every row of that recording before T - max_delay has arrived too.
So the recording's watermark is its latest time seen minus max_delay, and a row is final, and
predicted, once it lies before that watermark (or when the input ends: `flush`). Beam's own
watermark is one per stream, and a row's `time` counts seconds since its own recording started,
so recordings that start at different moments share no event-time clock: the watermark is kept
per recording, here (docs/DESIGN.md, "Live").

Final rows are predicted in (time, file, line) order, the batch job's order, each from the W-1
rows before it (the recording's first row repeated in front of its first rows, as
`windows.pad_front` does for the batch job): the same windows, so the same probabilities. A row
that arrives behind the watermark (or after its recording was flushed past it) cannot be placed
any more: it is rejected with that reason, never dropped in silence.

Memory per recording: W-1 rows of context plus the rows not yet final (about max_delay seconds
of rows plus what arrived with them), whatever the recording's length.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

from beam_jobs.blocks import RecordingRows
from beam_jobs.windows import pad_front


@dataclasses.dataclass
class RecordingState:
    """One recording's state between rows.

    context: float32 [<= W-1, F], the padded rows before the next row to predict (None before its
    first prediction); latest: the latest time seen (-inf before any row); last: (time, file,
    line) of the last row predicted (None before any); pending: the rows not yet final (None
    when there are none)."""

    context: Optional[np.ndarray] = None
    latest: float = float("-inf")
    last: Optional[Tuple[float, int, int]] = None
    pending: Optional[RecordingRows] = None

    def pending_rows(self) -> int:
        return 0 if self.pending is None else len(self.pending)


def admit(state: RecordingState, rows: RecordingRows, max_delay: float) -> Tuple[RecordingRows, np.ndarray]:
    """Add the rows that arrived together (one delivery: a file, a message) to `state.pending`;
    returns (the rows refused as late, the reason code of each: LATE_BEHIND or LATE_FLUSHED).

    A row is late when it lies behind the recording's watermark as it was before this delivery
    (rows of one delivery arrived at once, so none is late against another), or at or before the
    last row already predicted (after a flush, which ends the wait early)."""
    behind = rows.time < state.latest - max_delay
    flushed = np.zeros(len(rows), bool)
    if state.last is not None:
        t, source, line = state.last
        flushed = (rows.time < t) | ((rows.time == t) & ((rows.source < source)
                                                        | ((rows.source == source) & (rows.line <= line))))
    late = behind | flushed
    codes = np.where(behind, LATE_BEHIND, LATE_FLUSHED)[late]
    kept = rows.take(~late)
    if len(kept):
        state.latest = max(state.latest, float(kept.time.max()))
        state.pending = kept if state.pending is None else RecordingRows.concat([state.pending, kept])
    return rows.take(late), codes


LATE_BEHIND, LATE_FLUSHED = 0, 1


def late_reason(code: int, max_delay: float) -> str:
    if code == LATE_BEHIND:
        return (f"arrived more than --max-delay {max_delay:g} s behind a later row of its recording "
                "(its rows before it were already predicted)")
    return "arrived after its recording's rows up to a later time were predicted (the input ended or was flushed)"


def take_final(state: RecordingState, window: int, max_delay: float, flush: bool = False
               ) -> Tuple[Optional[RecordingRows], Optional[np.ndarray]]:
    """(the final rows in (time, file, line) order, padded float32 [W - 1 + n, F]: them preceded by
    the W-1 rows before them), removed from `state.pending`; (None, None) when none is final.
    `flush`: every pending row is final (the input ended)."""
    if state.pending is None:
        return None, None
    rows = state.pending.sorted_by_time()
    n = len(rows) if flush else int(np.searchsorted(rows.time, state.latest - max_delay, side="left"))
    if n == 0:
        state.pending = rows
        return None, None
    final = rows.take(slice(0, n))
    state.pending = rows.take(slice(n, None)) if n < len(rows) else None
    before = final.signals[:0] if state.context is None else state.context
    padded = pad_front(final.signals, before, window)
    state.context = padded[len(padded) - (window - 1):].copy()  # not a view: the rows can go
    state.last = (float(final.time[-1]), int(final.source[-1]), int(final.line[-1]))
    return final, padded
