"""Benchmark: `crewstream live` following recorders in real time, and draining a folder as fast as it can.

    .venv/bin/python -m benchmarks.bench_live --quick                  # smoke: 1, 2 crews x 8 s (about 1 minute)
    .venv/bin/python -m benchmarks.bench_live                          # 1,2,4,8,16,20 crews x 30 s, then 4 x 60 s
    .venv/bin/python -m benchmarks.bench_live --crews 8 --seconds 60 --model /tmp/bench-floor/model

Data: `crewstream.synth.generate(WORKDIR/data/crews-N-Ss, crews=1..N, test_seconds=S, seed=0)`
(LOFT, 2 seats per crew, 256 rows/s per person: 512 rows/s per crew), written once. The model
(unless `--model DIR`): bench_floor's (the demo's tcn trained 1 epoch on its tiny sample, in
WORKDIR/model); live's speed depends on the architecture, not on the weights.

Real time, for each crew count of --crews: `crewstream live --model-dir M --input-folder IN --output
OUT --max-delay D --stop-after-idle 3` is started (measured by benchmarks.common.measure: peak RSS,
CPU) while a feeder thread lands files in IN, one per period (1 s), each written under a hidden
name and renamed to `NNNNNN.csv`, the wall time of each rename recorded:

  1. warm-up: one second per period of a recording of its own (crew 1000, ids + 10^9: left out
     of every figure), until the first part file appears in OUT (the job has imported, built its
     pipeline and loaded the model: "ready" below, from the process start). Feeding before that
     would count the start-up as latency; not feeding would end the run (--stop-after-idle).
  2. the measured feed: the test CSV cut by beam_jobs.live_sources.recorded_deliveries(test.csv,
     1.0, 0.0) into one file per second of recording time (every person's rows of that second),
     one file landing per second, for S seconds. Then the job stops itself 3 s after the last file.

A row is final (the job may predict it) at the landing of the first file after which its
recording holds a row more than D s later than it (beam_jobs/live_state.py: time < latest - D);
its latency is the mtime of the part file holding it minus that moment. Rows that no later row
makes final are flushed when the input ends: their latency, counted from the last landing +
--stop-after-idle, is reported apart ("flushed") and left out of the percentiles. Kept up: p99 <= 1 s
and the backlog did not grow: the median latency of the rows final in the last quarter of the feed
is at most 0.5 s above that of the first quarter. CPU % during the feed: the job's CPU seconds
(psutil) between the first and the last landing over that wall time; overall: CPU over the whole
run (start-up and the idle tail included). Every id of the test CSV must be in the output once.

As fast as possible (--fast-crews N --fast-seconds S, default 4 x 60; 0 crews: skipped): every
file of the recording lands in IN before the job starts; rows/s from start to exit, and without
the start-up (from the mtime of the first part file to exit; the exit still includes the job's
wait of --stop-after-idle for more files, when it drained the folder before that).

The report (printed and written to WORKDIR/results.md): the machine, the tables, the most crews
followed in real time. Runs write under WORKDIR/runs/ (replaced by the next run); logs in
WORKDIR/logs/. Exit 1 when a run fails, never exits (killed after a timeout) or its ids are wrong.
"""

import argparse
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_CREWS = "1,2,4,8,16,20"
DEFAULT_SECONDS = 30.0
DEFAULT_MAX_DELAY = 1.0
STOP_AFTER_IDLE = 3.0
PERIOD_S = 1.0  # recording time per file, and wall time between two landings
TARGET_P99_S = 1.0
BACKLOG_SLACK_S = 0.5  # latency growth (last quarter's median - first quarter's) still "kept up"
QUARTER = 0.25
FAST = (4, 60.0)
QUICK = ("1,2", 8.0, (2, 8.0))  # crews, seconds, (fast crews, fast seconds)
WARMUP_CREW = 1000
WARMUP_ID_BASE = 10**9
WARMUP_SECONDS = 180.0  # the longest start-up waited for
EXIT_GRACE_S = 120.0  # after the last landing + idle: the job must have exited by then (or be killed)
POLL_S = 0.05


# --- data -------------------------------------------------------------------------------------

def ensure_test(workdir: Path, crews: Sequence[int], seconds: float, name: str) -> Path:
    """WORKDIR/data/NAME/test.csv of `crews` x `seconds`, written once by crewstream.synth (a
    NAME.done beside it says the write finished)."""
    from crewstream import synth

    folder, done = workdir / "data" / name, workdir / "data" / f"{name}.done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        print(f"set-up: synth {name} (crews {','.join(map(str, crews))}, {seconds:g} s)", file=sys.stderr,
              flush=True)
        synth.generate(str(folder), crews=tuple(crews), seconds=1.0, test_seconds=seconds, seed=0)
        done.write_text(f"crews={list(crews)} test_seconds={seconds}\n")
        print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return folder / "test.csv"


def file_bodies(deliveries) -> List[bytes]:
    """The bytes of the file of each delivery: its header line, then its lines."""
    return [(",".join(d.header) + "\n").encode() + d.data for d in deliveries]


def relabel(delivery, id_base: int) -> Tuple[bytes, np.ndarray]:
    """(the file of `delivery` with every id + `id_base`, those ids): the warm-up's rows, which no
    id of the measured file may share."""
    at = delivery.header.index("id")
    lines, ids = [], []
    for line in delivery.data.split(b"\n"):
        if not line:
            continue
        fields = line.split(b",")
        ids.append(int(fields[at]) + id_base)
        fields[at] = str(ids[-1]).encode()
        lines.append(b",".join(fields))
    body = (",".join(delivery.header) + "\n").encode() + b"\n".join(lines) + b"\n"
    return body, np.array(ids, np.int64)


def row_table(test_csv: Path, deliveries) -> Dict[str, np.ndarray]:
    """Per data row of the test CSV (file order): id, recording (a code per (crew, seat,
    experiment)), time, and file (the index of the delivery holding it)."""
    import pandas as pd

    frame = pd.read_csv(test_csv, usecols=["id", "crew", "seat", "experiment", "time"],
                        dtype={"experiment": str})
    recording = frame.groupby(["crew", "seat", "experiment"], sort=False).ngroup().to_numpy()
    return {"id": frame["id"].to_numpy(np.int64), "recording": recording,
            "time": frame["time"].to_numpy(np.float64), "file": file_of_rows(deliveries, len(frame))}


def file_of_rows(deliveries, n_rows: int) -> np.ndarray:
    """Per data row of the file the deliveries were cut from (row i = line i + 2), the index of
    the delivery holding it; -1 for a row none holds."""
    found = np.full(n_rows, -1, np.int64)
    for k, d in enumerate(deliveries):
        lines = d.lines if d.lines is not None else d.first_line + np.arange(d.data.count(b"\n"))
        found[np.asarray(lines, np.int64) - 2] = k
    return found


# --- the feeder -------------------------------------------------------------------------------

class Feeder(threading.Thread):
    """Lands files in `folder`: each body written to a hidden `.NNNNNN.csv` and renamed to
    `NNNNNN.csv` (NNNNNN counts every file landed, warm-up ones too), one per `period` seconds.

    With `ready` (a function), the `warmup` bodies come first, one per period, until ready()
    returns True (checked every POLL_S); then `bodies`, the measured files, whose rename times
    (time.time()) go to `landed` and names to `names`. `probe` (optional) is called right before
    the first measured file and right after the last, its results in `probed` {"start", "end"}:
    (time.time(), value). `run()` can be called directly (no thread) for a synchronous feed."""

    def __init__(self, folder: Path, bodies: Sequence[bytes], period: float = PERIOD_S,
                 warmup: Sequence[bytes] = (), ready: Optional[Callable[[], bool]] = None,
                 probe: Optional[Callable[[], object]] = None):
        super().__init__(name="feeder", daemon=True)
        self.folder, self.bodies, self.period = Path(folder), list(bodies), period
        self.warmup, self.ready, self.probe = list(warmup), ready, probe
        self.landed: List[float] = []
        self.names: List[str] = []
        self.warmup_landed = 0
        self.ready_at: Optional[float] = None
        self.probed: Dict[str, Tuple[float, object]] = {}
        self.error: Optional[str] = None
        self.finished = threading.Event()
        self._stopped = threading.Event()
        self._sequence = 0

    def stop(self) -> None:
        self._stopped.set()

    def land(self, body: bytes) -> Tuple[str, float]:
        name = f"{self._sequence:06d}.csv"
        self._sequence += 1
        hidden = self.folder / f".{name}"
        with open(hidden, "wb") as f:
            f.write(body)
        os.rename(hidden, self.folder / name)
        return name, time.time()

    def _wait_until(self, deadline: float, until: Optional[Callable[[], bool]] = None) -> bool:
        """Sleep until time.monotonic() reaches `deadline`; True early when until() is (checked
        every POLL_S), False at the deadline or when stopped."""
        while not self._stopped.is_set():
            if until is not None and until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stopped.wait(min(left, POLL_S) if until is not None else left)
        return False

    def run(self) -> None:
        try:
            self._feed()
        except Exception as e:  # reported by the run, which then stops the job
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.finished.set()

    def _feed(self) -> None:
        if self.ready is not None:
            next_at = time.monotonic()
            for body in self.warmup:
                if self._stopped.is_set() or self.ready():
                    break
                self.land(body)
                self.warmup_landed += 1
                next_at += self.period
                if self._wait_until(next_at, self.ready):
                    break
            if self._stopped.is_set():
                return
            if not self.ready():
                self.error = f"not ready after {self.warmup_landed} warm-up files"
                return
            self.ready_at = time.time()
        if self.probe is not None:
            self.probed["start"] = (time.time(), self.probe())
        next_at = time.monotonic()
        for k, body in enumerate(self.bodies):
            if k:
                self._wait_until(next_at)
            if self._stopped.is_set():
                return
            name, at = self.land(body)
            self.names.append(name)
            self.landed.append(at)
            next_at += self.period
        if self.probe is not None:
            self.probed["end"] = (time.time(), self.probe())


# --- the figures (pure) -----------------------------------------------------------------------

def final_at(recording: np.ndarray, times: np.ndarray, file_of_row: np.ndarray, landed: np.ndarray,
             max_delay: float) -> np.ndarray:
    """Per row, the wall time it became final: the landing of the first file after which its
    recording's latest time, less `max_delay`, lies after the row's time (live_state.take_final's
    test: time < latest - max_delay), and not before the row's own file; NaN for a row no later
    row makes final (flushed at the end)."""
    out = np.full(len(times), np.nan)
    landed = np.asarray(landed, np.float64)
    for r in np.unique(recording):
        rows = np.flatnonzero(recording == r)
        files, t = file_of_row[rows], times[rows]
        order = np.argsort(files, kind="stable")
        sorted_files = files[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_files) != 0])
        per_file = sorted_files[starts]  # the files holding rows of r, ascending
        latest = np.maximum.accumulate(np.maximum.reduceat(t[order], starts))  # its latest time after each
        k = np.searchsorted(latest - max_delay, t, side="right")  # first with latest - D > t
        k = np.maximum(k, np.searchsorted(per_file, files))  # not before the row itself arrived
        known = k < len(per_file)
        out[rows[known]] = landed[per_file[k[known]]]
    return out


def row_latencies(out_ids: np.ndarray, out_written: np.ndarray, ids: np.ndarray, final: np.ndarray,
                  flushed_from: float) -> Dict[str, np.ndarray]:
    """Latencies of the output rows whose id is one of `ids` (others, the warm-up's, left out):
    {"latency": written - final for rows made final by a later row, "final": their final moments,
    "flushed": written - flushed_from for the rows flushed at the end (final NaN)}."""
    import pandas as pd

    at = pd.Index(ids).get_indexer(out_ids)
    mine = at >= 0
    written, moment = out_written[mine], final[at[mine]]
    flushed = np.isnan(moment)
    return {"latency": written[~flushed] - moment[~flushed], "final": moment[~flushed],
            "flushed": written[flushed] - flushed_from}


def latency_stats(latency: np.ndarray) -> Dict[str, float]:
    """p50, p99 (numpy's linear interpolation) and max of `latency`; NaN when empty."""
    if not len(latency):
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(latency, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(np.max(latency))}


def backlog_growth(final: np.ndarray, latency: np.ndarray, fraction: float = QUARTER) -> float:
    """Median latency of the rows final in the last `fraction` of the span of final moments minus
    that of the first `fraction`: about 0 when the job keeps up, growing with the feed when not."""
    if len(final) < 2:
        return float("nan")
    lo, hi = float(np.min(final)), float(np.max(final))
    span = (hi - lo) * fraction
    return float(np.median(latency[final >= hi - span]) - np.median(latency[final <= lo + span]))


def kept_up(stats: Dict[str, float], growth: float) -> bool:
    return bool(stats["p99"] <= TARGET_P99_S and growth <= BACKLOG_SLACK_S)


def check_ids(out_ids: np.ndarray, expected: np.ndarray, also: np.ndarray = np.array([], np.int64)) -> Dict[str, int]:
    """The output's ids against the expected ones (`also`: others allowed, the warm-up's, also
    expected once): rows, expected rows found, missing, duplicated (extra copies), unexpected."""
    uniq, counts = np.unique(out_ids, return_counts=True)
    wanted = np.union1d(expected, also)
    return {"rows": int(np.isin(out_ids, expected).sum()), "expected": len(expected),
            "missing": int(len(wanted) - np.isin(wanted, uniq).sum()),
            "duplicates": int((counts - 1).sum()), "unexpected": int((~np.isin(uniq, wanted)).sum())}


def ids_ok(found: Dict[str, int]) -> bool:
    return found["rows"] == found["expected"] and not (found["missing"] or found["duplicates"] or found["unexpected"])


def read_output(folder: Path) -> Dict:
    """The live output: {"ids", "written" (each row's part file's mtime), "parts", "rejects"
    (rejected rows, in rejects-*.csv files), "first" (the earliest part file's mtime, or None)}."""
    import pandas as pd

    from tfrecords_schema import live as live_output

    ids, written, parts, rejects = [], [], 0, 0
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        kind = live_output.parse_name(name)
        if kind is None:
            continue
        path = folder / name
        if kind[0] == "rejects":
            rejects += max(0, sum(1 for _ in open(path, "rb")) - 1)
            continue
        parts += 1
        frame = pd.read_csv(path, usecols=["id"], dtype={"id": np.int64})
        ids.append(frame["id"].to_numpy())
        written.append(np.full(len(frame), path.stat().st_mtime))
    ids_all = np.concatenate(ids) if ids else np.array([], np.int64)
    written_all = np.concatenate(written) if written else np.array([], np.float64)
    return {"ids": ids_all, "written": written_all, "parts": parts, "rejects": rejects,
            "first": float(written_all.min()) if len(written_all) else None}


# --- the runs ---------------------------------------------------------------------------------

def live_command(model: Path, inbox: Path, out: Path, max_delay: float) -> List[str]:
    return [sys.executable, "-m", "crewstream.cli", "live", "--model-dir", str(model), "--input-folder", str(inbox),
            "--output", str(out), "--max-delay", f"{max_delay:g}", "--stop-after-idle", f"{STOP_AFTER_IDLE:g}"]


def _live_child():
    """This process's `crewstream live` child (measure's), or None."""
    import psutil

    for child in psutil.Process().children():
        try:
            if "live" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def _cpu_s(proc) -> Optional[float]:
    import psutil

    try:
        t = proc.cpu_times()
        return t.user + t.system
    except (psutil.Error, AttributeError):
        return None


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _watch(feeder: Feeder, seconds: float, result: Dict) -> None:
    """Kill the live job when it has not exited EXIT_GRACE_S after it should have, or when the
    feeder failed."""
    start = time.monotonic()
    while True:
        child = _live_child()
        if child is None and time.monotonic() - start > 30:
            return  # exited (or never started: measure reports it)
        if child is not None and (feeder.error or time.monotonic() - start > seconds + STOP_AFTER_IDLE
                                  + EXIT_GRACE_S + WARMUP_SECONDS):
            result["killed"] = feeder.error or "did not exit in time"
            child.kill()
            return
        if result.get("exited"):
            return
        time.sleep(0.5)


def run_realtime(crews: int, args, model: Path, warm: Sequence[Tuple[bytes, np.ndarray]]) -> Dict:
    """One real-time run of `crews` crews; `warm`: the warm-up files and their ids (relabel)."""
    from beam_jobs.live_sources import recorded_deliveries
    from benchmarks.common import measure

    workdir = args.workdir
    test_csv = ensure_test(workdir, range(1, crews + 1), args.seconds, f"crews-{crews}-{args.seconds:g}s")
    deliveries = recorded_deliveries(str(test_csv), PERIOD_S, 0.0)
    rows = row_table(test_csv, deliveries)
    run = _fresh(workdir / "runs" / f"live-{crews}")
    inbox, out = _fresh(run / "in"), run / "out"

    def ready() -> bool:
        return out.is_dir() and any(n.startswith("part-") and n.endswith(".csv") for n in os.listdir(out))

    def probe():
        child = _live_child()
        return None if child is None else _cpu_s(child)

    feeder = Feeder(inbox, file_bodies(deliveries), PERIOD_S, [body for body, _ in warm], ready, probe)
    cmd = live_command(model, inbox, out, args.max_delay)
    state: Dict = {}
    watchdog = threading.Thread(target=_watch, args=(feeder, args.seconds, state), daemon=True)
    print(f"real time: {crews} crew(s) x {args.seconds:g} s ...", file=sys.stderr, flush=True)
    feeder.start()
    watchdog.start()
    try:
        measured = measure(cmd, workdir / "logs" / f"live-{crews}.log")
    finally:
        state["exited"] = True
        feeder.stop()
    feeder.join()
    exited_at = measured["started_at"] + measured["wall_s"]
    result = {"crews": crews, "kind": "realtime", "measure": measured, "command": shlex.join(cmd),
              "rows_fed": len(rows["id"]), "files": len(feeder.landed), "killed": state.get("killed"),
              "feeder_error": feeder.error, "warmup_files": feeder.warmup_landed,
              "ready_s": None if feeder.ready_at is None else feeder.ready_at - measured["started_at"]}
    output = read_output(out)
    warm_ids = np.concatenate([ids for _, ids in warm[:feeder.warmup_landed]]) if feeder.warmup_landed else None
    result["ids"] = check_ids(output["ids"], rows["id"], warm_ids if warm_ids is not None else np.array([], np.int64))
    result["rejects"] = output["rejects"]
    result["ok"] = (measured["returncode"] == 0 and not result["killed"] and not feeder.error
                    and len(feeder.landed) == len(deliveries) and ids_ok(result["ids"]) and not output["rejects"])
    if not feeder.landed:
        return result
    landed = np.array(feeder.landed)
    final = final_at(rows["recording"], rows["time"], rows["file"], landed, args.max_delay)
    found = row_latencies(output["ids"], output["written"], rows["id"], final, landed[-1] + STOP_AFTER_IDLE)
    result.update(latency_stats(found["latency"]))
    result["growth"] = backlog_growth(found["final"], found["latency"])
    result["kept_up"] = kept_up(result, result["growth"]) and result["ok"]
    result["final_rows"] = len(found["latency"])
    result["flushed_rows"] = len(found["flushed"])
    result["flushed_max"] = float(found["flushed"].max()) if len(found["flushed"]) else float("nan")
    result["feed_s"] = landed[-1] - landed[0] + PERIOD_S
    result["rows_per_s"] = len(rows["id"]) / result["feed_s"]
    result["feeder_lag_max"] = float(np.max(landed - landed[0] - PERIOD_S * np.arange(len(landed))))
    start, end = feeder.probed.get("start"), feeder.probed.get("end")
    if start and end and start[1] is not None and end[1] is not None and end[0] > start[0]:
        result["cpu_feed_pct"] = 100 * (end[1] - start[1]) / (end[0] - start[0])
        if exited_at > end[0]:
            result["cpu_tail_pct"] = 100 * (measured["cpu_s"] - end[1]) / (exited_at - end[0])
    result["cpu_pct"] = 100 * measured["cpu_s"] / measured["wall_s"]
    return result


def run_fast(args, model: Path) -> Dict:
    """Every file of the recording in the folder before the job starts."""
    from beam_jobs.live_sources import recorded_deliveries
    from benchmarks.common import measure

    crews, seconds = args.fast_crews, args.fast_seconds
    test_csv = ensure_test(args.workdir, range(1, crews + 1), seconds, f"crews-{crews}-{seconds:g}s")
    deliveries = recorded_deliveries(str(test_csv), PERIOD_S, 0.0)
    ids = row_table(test_csv, deliveries)["id"]
    run = _fresh(args.workdir / "runs" / "fast")
    inbox, out = _fresh(run / "in"), run / "out"
    Feeder(inbox, file_bodies(deliveries), period=0.0).run()
    cmd = live_command(model, inbox, out, args.max_delay)
    print(f"as fast as possible: {crews} crew(s) x {seconds:g} s ...", file=sys.stderr, flush=True)
    measured = measure(cmd, args.workdir / "logs" / "live-fast.log")
    output = read_output(out)
    found = check_ids(output["ids"], ids)
    result = {"kind": "fast", "crews": crews, "seconds": seconds, "measure": measured, "command": shlex.join(cmd),
              "rows_fed": len(ids), "files": len(deliveries), "ids": found, "rejects": output["rejects"],
              "ok": measured["returncode"] == 0 and ids_ok(found) and not output["rejects"],
              "rows_per_s": len(ids) / measured["wall_s"], "cpu_pct": 100 * measured["cpu_s"] / measured["wall_s"]}
    if output["first"] is not None:
        result["startup_s"] = output["first"] - measured["started_at"]
        result["rows_per_s_no_startup"] = len(ids) / (measured["wall_s"] - result["startup_s"])
    return result


# --- the report -------------------------------------------------------------------------------

REALTIME_HEADER = ["crews", "rows fed", "rows/s fed", "ready s", "p50 s", "p99 s", "max s",
                   "growth s", "flushed at end: rows, max s", "kept up", "peak RSS GiB", "CPU % feed",
                   "CPU % tail", "CPU % all", "ids"]
FAST_HEADER = ["crews x s", "rows", "wall s", "start-up s", "rows/s (start to exit)", "rows/s (no start-up)",
               "peak RSS GiB", "CPU % all", "ids"]


def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def ids_text(found: Dict[str, int], rejects: int) -> str:
    if ids_ok(found) and not rejects:
        return f"{found['rows']:,} once each"
    parts = [f"{found['rows']:,} of {found['expected']:,}"]
    parts += [f"{found[k]:,} {k}" for k in ("missing", "duplicates", "unexpected") if found[k]]
    parts += [f"{rejects:,} rejected"] if rejects else []
    return "; ".join(parts)


def realtime_row(r: Dict) -> List[str]:
    from benchmarks.common import GiB

    m = r["measure"]
    failed = "" if r["ok"] else " (FAILED" + (f": {r['killed']}" if r.get("killed") else "") \
        + (f": {r['feeder_error']}" if r.get("feeder_error") else "") + f", exit {m['returncode']})"
    if "p99" not in r:
        return [f"{r['crews']}{failed}", f"{r['rows_fed']:,}"] + ["-"] * (len(REALTIME_HEADER) - 3) + [
            ids_text(r["ids"], r["rejects"])]
    return [f"{r['crews']}{failed}", f"{r['rows_fed']:,}", f"{r['rows_per_s']:,.0f}", _f(r["ready_s"], ".1f"),
            _f(r["p50"]), _f(r["p99"]), _f(r["max"]), _f(r["growth"], "+.2f"),
            f"{r['flushed_rows']:,}, {_f(r['flushed_max'])}", "yes" if r["kept_up"] else "no",
            f"{m['max_single_rss'] / GiB:.2f}", _f(r.get("cpu_feed_pct"), ".0f"), _f(r.get("cpu_tail_pct"), ".0f"),
            _f(r["cpu_pct"], ".0f"), ids_text(r["ids"], r["rejects"])]


def fast_row(r: Dict) -> List[str]:
    from benchmarks.common import GiB

    m = r["measure"]
    label = f"{r['crews']} x {r['seconds']:g}" + ("" if r["ok"] else f" (FAILED, exit {m['returncode']})")
    return [label, f"{r['rows_fed']:,}", f"{m['wall_s']:.1f}", _f(r.get("startup_s"), ".1f"),
            f"{r['rows_per_s']:,.0f}", _f(r.get("rows_per_s_no_startup"), ",.0f"),
            f"{m['max_single_rss'] / GiB:.2f}", f"{r['cpu_pct']:.0f}", ids_text(r["ids"], r["rejects"])]


def most_followed(results: Sequence[Dict]) -> Optional[int]:
    """The most crews of a run that kept up (p99 <= 1 s, no growing backlog, ids right)."""
    kept = [r["crews"] for r in results if r.get("kept_up")]
    return max(kept) if kept else None


def report(args, argv: Sequence[str], header: List[str], model: Path, realtime: List[Dict],
           fast: Optional[Dict], started: float) -> str:
    from benchmarks.bench_floor import _model_line, markdown_table
    from benchmarks.common import REPO_ROOT, load_average

    python = os.path.relpath(sys.executable, REPO_ROOT) if sys.executable.startswith(str(REPO_ROOT)) \
        else sys.executable
    lines = ["# bench_live: `crewstream live` in real time and as fast as possible", *header,
             f"- load average at end (1, 5, 15 min): {load_average()}",
             f"- --max-delay {args.max_delay:g} s, --stop-after-idle {STOP_AFTER_IDLE:g} s; one file per "
             f"{PERIOD_S:g} s of recording (every person's rows of that second); 512 rows/s per crew; "
             f"total {time.perf_counter() - started:.0f} s",
             _model_line(model),
             f"- reproduce: `cd {REPO_ROOT} && {shlex.join([python, '-m', 'benchmarks.bench_live', *argv])}`"]
    if realtime:
        best = most_followed(realtime)
        lines += ["", f"## Real time: {args.seconds:g} s of recording, one file landing per second", "",
                  markdown_table(REALTIME_HEADER, [realtime_row(r) for r in realtime]), "",
                  f"- latency: part file mtime - the landing of the file that made the row final (a row of "
                  f"its recording more than {args.max_delay:g} s later); p50/p99/max over those rows. "
                  f"Flushed at end: the rows only the end of the input made final, counted from the last "
                  f"landing + {STOP_AFTER_IDLE:g} s, left out of the percentiles",
                  f"- growth: median latency of the rows final in the last quarter of the feed minus the "
                  f"first quarter's; kept up: p99 <= {TARGET_P99_S:g} s and growth <= {BACKLOG_SLACK_S:g} s "
                  "(and the run's ids right)",
                  "- ready: process start to the first part file of the warm-up recording (imports, pipeline, "
                  "model load, first prediction); the measured feed starts then. CPU % feed: from the first "
                  "to the last landing; tail: from the last landing to exit (the idle wait and the final "
                  "flush); all: the whole run over its wall time (100 % = one core). Peak RSS: the largest "
                  "single process (measure's samples and ru_maxrss)",
                  f"- **most crews followed in real time (p99 <= {TARGET_P99_S:g} s): "
                  + (f"{best}**" if best is not None else "none of those run**")]
        lines += [f"- {r['crews']} crew(s): `{r['command']}` (log {r['measure']['log']})" for r in realtime[:1]]
    if fast:
        lines += ["", "## As fast as possible: every file in the folder before the start", "",
                  markdown_table(FAST_HEADER, [fast_row(fast)]), "",
                  "- start-up: process start to the mtime of the first part file; rows/s (no start-up): rows "
                  f"over (exit - that); the exit includes the job's wait of up to {STOP_AFTER_IDLE:g} s for "
                  "more files before its final flush",
                  f"- `{fast['command']}` (log {fast['measure']['log']})"]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------

def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crews", default=DEFAULT_CREWS, help=f"crew counts to follow in real time, "
                                                               f"comma-separated (default {DEFAULT_CREWS}; "
                                                               "empty: none)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help=f"seconds of recording fed in real time (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--max-delay", type=float, default=DEFAULT_MAX_DELAY,
                        help=f"live's --max-delay (default {DEFAULT_MAX_DELAY:g})")
    parser.add_argument("--fast-crews", type=int, default=FAST[0],
                        help=f"crews of the as-fast-as-possible run (default {FAST[0]}; 0: skip it)")
    parser.add_argument("--fast-seconds", type=float, default=FAST[1],
                        help=f"its seconds of recording (default {FAST[1]:g})")
    parser.add_argument("--model", help="a train run's MODEL folder (a tcn) instead of WORKDIR/model")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-live"),
                        help="data, model, runs, logs (default /tmp/bench-live)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: crews {QUICK[0]} x {QUICK[1]:g} s, fast {QUICK[2][0]} x {QUICK[2][1]:g} s")
    args = parser.parse_args(argv)
    if args.quick:
        args.crews, args.seconds = QUICK[0], QUICK[1]
        args.fast_crews, args.fast_seconds = QUICK[2]
    try:
        args.crews = [int(c) for c in args.crews.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--crews {args.crews!r}: expected comma-separated numbers of crews")
    if any(c < 1 or c >= WARMUP_CREW for c in args.crews) or args.fast_crews < 0 or args.fast_crews >= WARMUP_CREW:
        parser.error(f"crew counts must be from 1 to {WARMUP_CREW - 1}")
    if args.seconds < 2 * PERIOD_S or args.max_delay < 0 or (args.fast_crews and args.fast_seconds < PERIOD_S):
        parser.error("--seconds must be >= 2, --fast-seconds >= 1 and --max-delay >= 0")
    args.workdir = args.workdir.resolve()
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    from beam_jobs.live_sources import recorded_deliveries
    from benchmarks.bench_floor import ensure_model
    from benchmarks.common import machine_header

    started = time.perf_counter()
    (args.workdir / "logs").mkdir(parents=True, exist_ok=True)
    model = ensure_model(args.workdir, args.model)
    realtime: List[Dict] = []
    if args.crews:
        warm_csv = ensure_test(args.workdir, [WARMUP_CREW], WARMUP_SECONDS, "warmup")
        warm = [relabel(d, WARMUP_ID_BASE) for d in recorded_deliveries(str(warm_csv), PERIOD_S, 0.0)]
        for crews in args.crews:  # data first: a synth write must not fall inside a measured run
            ensure_test(args.workdir, range(1, crews + 1), args.seconds, f"crews-{crews}-{args.seconds:g}s")
    if args.fast_crews:
        ensure_test(args.workdir, range(1, args.fast_crews + 1), args.fast_seconds,
                    f"crews-{args.fast_crews}-{args.fast_seconds:g}s")
    header = machine_header()
    for crews in args.crews:
        result = run_realtime(crews, args, model, warm)
        realtime.append(result)
        print(f"  {crews} crew(s): " + " | ".join(realtime_row(result)), file=sys.stderr, flush=True)
    fast = run_fast(args, model) if args.fast_crews else None
    text = report(args, argv, header, model, realtime, fast, started)
    print("\n" + text)
    (args.workdir / "results.md").write_text(text + "\n")
    return 0 if all(r["ok"] for r in realtime) and (fast is None or fast["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
