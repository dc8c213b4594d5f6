"""`crewstream watch --live DIR`: a live page of a live-predict output folder.

Serves, with the standard library only, one page (its script and style inline, plots drawn by
hand on a <canvas>: nothing is downloaded) that polls `/rows` every second and shows, per person
(crew, seat, experiment), the last minutes of the four class probabilities and the current state.
The folder's files are named and laid out by tfrecords_schema.live: `part-*.csv` files (rows) and
`rejects-*.csv` files (counted); any other file is ignored.

`/rows?after=NAME` answers JSON: the rows of the part files whose names sort after NAME (all when
NAME is empty), per person, downsampled to at most POINTS_PER_SECOND points per second of the
rows' own `time`, with `files` = [the last part file read] for the next request's `after`. The
server reads each file once (a cache refreshed on each request) and keeps, per person, only the
last `--minutes` of points and the last row: its memory does not grow with the run's length.
"""

import argparse
import csv
import html
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional, Sequence

from cli_common import console, failure
from tfrecords_schema import live
from tfrecords_schema.csv_columns import CREW, EXPERIMENT, SEAT, TIME
from tfrecords_schema.record import LABEL_VOCABULARY

DEFAULT_PORT = 8765
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MINUTES = 5.0
POINTS_PER_SECOND = 4  # of the rows' own time, per person, in the plots
READ_BUDGET_SECONDS = 0.5  # of file reading per request; the rest is read by the next requests

logger = logging.getLogger("crewstream.watch")


class MalformedFile(ValueError):
    """A part or rejects file that does not hold what tfrecords_schema.live says."""


# ---------------------------------------------------------------------------------------------
# The folder, read incrementally

class _Person:
    """One person's plot: points of POINTS_PER_SECOND buckets (sums of the probabilities, count,
    and the name of the last file that added to it), and the last row (the current state)."""

    __slots__ = ("crew", "seat", "experiment", "buckets", "last_time", "last")

    def __init__(self, crew: str, seat: str, experiment: str):
        self.crew, self.seat, self.experiment = crew, seat, experiment
        self.buckets: Dict[int, list] = {}  # bucket -> [sum A, sum B, sum C, sum D, count, file]
        self.last_time = -math.inf
        self.last: Sequence[float] = ()

    def add(self, seconds: float, probabilities: Sequence[float], name: str) -> None:
        bucket = math.floor(seconds * POINTS_PER_SECOND)
        point = self.buckets.get(bucket)
        if point is None:
            self.buckets[bucket] = [*probabilities, 1, name]
        else:
            for i, p in enumerate(probabilities):
                point[i] += p
            point[4] += 1
            point[5] = name
        if seconds >= self.last_time:
            self.last_time, self.last = seconds, probabilities

    def trim(self, window_seconds: float) -> None:
        """Drop the points older than `window_seconds` before the last row."""
        cutoff = math.floor((self.last_time - window_seconds) * POINTS_PER_SECOND)
        if self.buckets and min(self.buckets) < cutoff:
            self.buckets = {b: p for b, p in self.buckets.items() if b >= cutoff}

    def as_json(self, after: str) -> Optional[dict]:
        """The points added by files after `after` (None when there are none), and the state."""
        buckets = sorted(b for b, point in self.buckets.items() if point[5] > after)
        if not buckets and after:
            return None
        state = max(range(len(LABEL_VOCABULARY)), key=lambda i: self.last[i])
        series = {"time": [b / POINTS_PER_SECOND for b in buckets]}
        for i, label in enumerate(LABEL_VOCABULARY):
            series[label] = [round(self.buckets[b][i] / self.buckets[b][4], 4) for b in buckets]
        return {"crew": self.crew, "seat": self.seat, "experiment": self.experiment, **series,
                "state": LABEL_VOCABULARY[state], "probability": round(self.last[state], 4),
                "last": {label: round(p, 4) for label, p in zip(LABEL_VOCABULARY, self.last)},
                "updated": self.last_time}


class LiveFolder:
    """What has been read of a live output folder; `rows(after)` reads the new files first.

    Thread-safe (the server answers requests in threads). Each file is read once, in name order
    (the order they were written); a malformed file is skipped with one warning.
    """

    def __init__(self, folder: str, minutes: float = DEFAULT_MINUTES):
        self.folder = folder
        self.window_seconds = minutes * 60.0
        self.people: Dict[str, _Person] = {}
        self.read: set = set()  # names read (or skipped), of files still in the folder
        self.last_part = ""  # the greatest part file name read
        self.rows_read = 0
        self.rejects = 0
        self.malformed = 0
        self.pending = 0  # files found but not read yet (over one request's READ_BUDGET_SECONDS)
        self.exists = False
        self._lock = threading.Lock()

    def rows(self, after: str = "") -> dict:
        """The JSON answer of `/rows?after=AFTER` (module docstring)."""
        with self._lock:
            self.refresh()
            people = {}
            for key, person in self.people.items():
                series = person.as_json(after)
                if series is not None:
                    people[key] = series
            return {"folder": self.folder, "exists": self.exists, "minutes": self.window_seconds / 60.0,
                    "files": [self.last_part] if self.last_part else [], "people": people,
                    "people_seen": len(self.people), "rows": self.rows_read, "rejects": self.rejects,
                    "malformed": self.malformed, "pending": self.pending}

    def refresh(self, budget_seconds: float = READ_BUDGET_SECONDS) -> None:
        """Read the files not read yet, in name order, for about `budget_seconds` at most (one
        file at least)."""
        try:
            with os.scandir(self.folder) as entries:
                names = {e.name for e in entries if live.parse_name(e.name) is not None}
            self.exists = True
        except (FileNotFoundError, NotADirectoryError):
            names, self.exists = set(), False
        except OSError as e:  # unreadable: say so once per change, keep serving
            logger.warning("cannot list %s: %s", self.folder, e.strerror or e)
            return
        self.read &= names  # only the names still listed: bounded by the folder itself
        new = sorted(names - self.read)
        started = time.monotonic()
        for i, name in enumerate(new):
            if i and time.monotonic() - started > budget_seconds:
                self.pending = len(new) - i
                return
            self._read(name)
        self.pending = 0

    def _read(self, name: str) -> None:
        path = os.path.join(self.folder, name)
        kind = live.parse_name(name)[0]
        try:
            if kind == "part":
                rows = _read_part(path)
            else:
                rejects = _count_rejects(path)
        except FileNotFoundError:  # removed since it was listed
            return
        except (OSError, ValueError, csv.Error) as e:
            self.read.add(name)
            self.malformed += 1
            reason = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
            logger.warning("skipped %s: %s", path, reason)
            return
        self.read.add(name)
        if kind != "part":
            self.rejects += rejects
            return
        touched = set()
        for key, crew, seat, experiment, seconds, probabilities in rows:
            person = self.people.get(key)
            if person is None:
                person = self.people[key] = _Person(crew, seat, experiment)
            person.add(seconds, probabilities, name)
            touched.add(person)
        for person in touched:
            person.trim(self.window_seconds)
        self.rows_read += len(rows)
        self.last_part = max(self.last_part, name)


def person_key(crew: str, seat: str, experiment: str) -> str:
    """How a person is named on the page and in `/rows`: "crew 1 seat 0 LOFT"."""
    return f"crew {crew} seat {seat} {experiment}"


_INDEX = {column: i for i, column in enumerate(live.COLUMNS)}


def _read_part(path: str) -> list:
    """[(person key, crew, seat, experiment, time, (A, B, C, D))] of a part file; MalformedFile
    (a ValueError) unless every line is a row of live.COLUMNS with finite numbers."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != list(live.COLUMNS):
            raise MalformedFile(f"header is not {','.join(live.COLUMNS)}")
        rows = []
        crew_i, seat_i, experiment_i, time_i = (_INDEX[c] for c in (CREW, SEAT, EXPERIMENT, TIME))
        label_i = [_INDEX[label] for label in LABEL_VOCABULARY]
        for row in reader:
            if len(row) != len(live.COLUMNS):
                raise MalformedFile(f"line {reader.line_num}: {len(row)} fields, expected {len(live.COLUMNS)}")
            try:
                seconds = float(row[time_i])
                probabilities = tuple(float(row[i]) for i in label_i)
            except ValueError:
                raise MalformedFile(f"line {reader.line_num}: a time or probability is not a number") from None
            if not all(map(math.isfinite, (seconds, *probabilities))):
                raise MalformedFile(f"line {reader.line_num}: a time or probability is not finite")
            crew, seat, experiment = row[crew_i].strip(), row[seat_i].strip(), row[experiment_i].strip()
            rows.append((person_key(crew, seat, experiment), crew, seat, experiment, seconds, probabilities))
        return rows


def _count_rejects(path: str) -> int:
    """The number of rejected rows in a rejects file (its records but the header)."""
    with open(path, newline="", encoding="utf-8") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


# ---------------------------------------------------------------------------------------------
# The server

class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif url.path == "/rows":
            after = urllib.parse.parse_qs(url.query).get("after", [""])[0]
            body = json.dumps(self.server.live.rows(after), separators=(",", ":"), allow_nan=False)
            self._send(200, "application/json", body.encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # http.server's signature
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, live_folder: LiveFolder, page: bytes):
        self.live, self.page = live_folder, page
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # a page closed mid-answer, or a bug in one answer: logged, never a traceback on stderr
        error = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(error, ConnectionError) else logging.WARNING
        logger.log(level, "answering %s: %s", client_address[0], error, exc_info=logger.isEnabledFor(logging.DEBUG))


class Watch:
    """The page's server, listening on (host, port) once made (port 0: a free one); `serve()`
    answers until interrupted, `start()` in a thread (tests), `close()` stops and closes it."""

    def __init__(self, folder: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 minutes: float = DEFAULT_MINUTES):
        self.folder = folder
        self.live = LiveFolder(folder, minutes)
        try:
            self.server = _Server((host, port), self.live, render_page(folder, minutes))
        except OSError as e:
            raise ValueError(f"--host {host} --port {port}: cannot listen: "
                             f"{(e.strerror or str(e)).lower()}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def host(self) -> str:
        return self.server.server_address[0]

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> "Watch":
        self._thread = threading.Thread(target=self.serve, name="crewstream-watch", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# The page

# The class meanings (docs/DATA.md): A baseline, B startle/surprise (the SS experiment),
# C channelized attention (CA), D diverted attention (DA).
CLASSES = {"A": ("baseline", "#2e7d32"), "B": ("SS startle/surprise", "#ef8f00"),
           "C": ("CA channelized attention", "#1565c0"), "D": ("DA diverted attention", "#c62828")}


def render_page(folder: str, minutes: float) -> bytes:
    config = {"folder": folder, "minutes": minutes, "labels": list(LABEL_VOCABULARY),
              "classes": {label: {"name": name, "color": color} for label, (name, color) in CLASSES.items()}}
    legend = "".join(f'<span class="key"><i style="background:{color}"></i>{label} {html.escape(name)}</span>'
                     for label, (name, color) in CLASSES.items())
    page = (_PAGE.replace("__FOLDER__", html.escape(folder))
            .replace("__LEGEND__", legend)
            .replace("__MINUTES__", f"{minutes:g}")
            .replace("__CONFIG__", json.dumps(config).replace("<", "\\u003c")))
    return page.encode("utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crewstream watch: __FOLDER__</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1b1f24; background: #f3f4f6; }
header { background: #fff; border-bottom: 1px solid #d0d4da; padding: 10px 18px; position: sticky; top: 0; z-index: 1; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
h1 code { font-size: 15px; color: #444; }
#summary { color: #333; }
#summary b { font-variant-numeric: tabular-nums; }
.legend { margin-top: 4px; }
.key { margin-right: 16px; white-space: nowrap; }
.key i { display: inline-block; width: 18px; height: 4px; margin: 0 6px 3px 0; vertical-align: middle; }
#waiting { margin: 40px 18px; font-size: 18px; color: #555; }
#people { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 12px; padding: 12px 18px; }
.person { background: #fff; border: 1px solid #d0d4da; border-radius: 6px; padding: 8px 10px; }
.person .top { display: flex; justify-content: space-between; align-items: center; }
.person h2 { font-size: 15px; margin: 0; }
.person .when { color: #666; font-size: 12px; font-variant-numeric: tabular-nums; }
.state { font-size: 26px; font-weight: 700; color: #fff; border-radius: 5px; padding: 0 10px; min-width: 90px;
         text-align: center; font-variant-numeric: tabular-nums; }
.state small { font-size: 12px; font-weight: 400; display: block; margin-top: -4px; }
canvas { width: 100%; height: 150px; display: block; margin-top: 6px; }
.error { color: #c62828; }
</style></head>
<body>
<header>
<h1>crewstream watch <code>__FOLDER__</code></h1>
<div id="summary">connecting&hellip;</div>
<div class="legend">__LEGEND__ <span class="key">(last __MINUTES__ min of each person's own time)</span></div>
</header>
<p id="waiting">waiting for rows in <code>__FOLDER__</code></p>
<main id="people"></main>
<script>
"use strict";
const CONFIG = __CONFIG__;
const people = {};   // key -> {data: series, el: panel}
let after = "", total = {rows: 0, rejects: 0, malformed: 0}, lastUpdate = null, pending = 0;

function personOrder(a, b) {
  const pa = people[a].data, pb = people[b].data;
  const ca = Number(pa.crew), cb = Number(pb.crew);
  if (ca !== cb) return (isNaN(ca) || isNaN(cb)) ? String(pa.crew).localeCompare(pb.crew) : ca - cb;
  if (pa.seat !== pb.seat) return String(pa.seat).localeCompare(String(pb.seat));
  return String(pa.experiment).localeCompare(String(pb.experiment));
}

function merge(key, d) {
  let p = people[key];
  if (!p) {
    p = people[key] = {data: {time: []}, el: null};
    for (const l of CONFIG.labels) p.data[l] = [];
  }
  const s = p.data, t0 = d.time.length ? d.time[0] : Infinity;
  let keep = s.time.findIndex(t => t >= t0);   // a newer version of a point replaces it
  if (keep < 0) keep = s.time.length;
  const cut = Math.max(d.updated, s.updated || -Infinity) - CONFIG.minutes * 60;
  const time = s.time.slice(0, keep).concat(d.time);
  let first = time.findIndex(t => t >= cut);
  if (first < 0) first = time.length;
  s.time = time.slice(first);
  for (const l of CONFIG.labels) s[l] = s[l].slice(0, keep).concat(d[l]).slice(first);
  for (const f of ["crew", "seat", "experiment", "state", "probability", "last", "updated"]) s[f] = d[f];
}

function panel(key) {
  const p = people[key];
  if (!p.el) {
    const el = document.createElement("section");
    el.className = "person";
    el.dataset.person = key;
    el.innerHTML = '<div class="top"><div><h2></h2><div class="when"></div></div>' +
                   '<div class="state"><span class="value"></span><small></small></div></div><canvas></canvas>';
    el.querySelector("h2").textContent = key;
    p.el = el;
  }
  return p.el;
}

function fmt(seconds) {
  const s = Math.round(seconds * 10) / 10;
  return s >= 60 ? Math.floor(s / 60) + ":" + (s % 60).toFixed(1).padStart(4, "0") : s.toFixed(1) + " s";
}

function render() {
  const keys = Object.keys(people).sort(personOrder);
  document.getElementById("waiting").style.display = keys.length ? "none" : "";
  const main = document.getElementById("people");
  keys.forEach((key, i) => {
    const el = panel(key), s = people[key].data, cls = CONFIG.classes[s.state];
    if (main.children[i] !== el) main.insertBefore(el, main.children[i] || null);
    const st = el.querySelector(".state");
    st.dataset.state = s.state;
    st.style.background = cls.color;
    st.title = Object.entries(s.last).map(([l, v]) => l + " " + v.toFixed(2)).join("  ");
    st.querySelector(".value").textContent = s.state + " " + s.probability.toFixed(2);
    st.querySelector("small").textContent = cls.name;
    el.querySelector(".when").textContent = "time " + fmt(s.updated) + ", " + s.time.length + " points";
    draw(el.querySelector("canvas"), s);
  });
  const when = lastUpdate ? lastUpdate.toLocaleTimeString() : "never";
  document.getElementById("summary").innerHTML =
    "<b>" + total.rows.toLocaleString() + "</b> rows, <b>" + keys.length + "</b> people, " +
    "<b>" + total.rejects.toLocaleString() + "</b> rejected rows" +
    (total.malformed ? ', <b class="error">' + total.malformed + "</b> unreadable files" : "") +
    (pending ? ", reading " + pending + " more files" : "") + "; last update <b>" + when + "</b>";
}

function draw(canvas, s) {
  const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth || 400, h = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 30, right = w - 6, top = 6, bottom = h - 20, span = CONFIG.minutes * 60;
  const end = s.updated, start = end - span;
  const x = t => left + (t - start) / span * (right - left), y = p => bottom - p * (bottom - top);
  g.font = "11px system-ui, sans-serif"; g.fillStyle = "#666"; g.strokeStyle = "#e3e6ea"; g.lineWidth = 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const p of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(left, y(p)); g.lineTo(right, y(p)); g.stroke();
    g.fillText(p.toFixed(1), left - 4, y(p));
  }
  const step = span <= 120 ? 15 : span <= 600 ? 60 : Math.ceil(span / 5 / 60) * 60;
  g.textBaseline = "top";
  for (let ago = 0; ago <= span + 1e-9; ago += step) {
    const xx = x(end - ago);
    g.beginPath(); g.moveTo(xx, top); g.lineTo(xx, bottom); g.stroke();
    g.textAlign = ago === 0 ? "right" : ago + step > span + 1e-9 ? "left" : "center";
    g.fillText(ago ? "-" + (step >= 60 ? ago / 60 + " min" : ago + " s") : "now", xx, bottom + 4);
  }
  g.lineWidth = 1.6; g.lineJoin = "round";
  for (const l of CONFIG.labels) {
    const v = s[l];
    g.strokeStyle = CONFIG.classes[l].color; g.beginPath();
    for (let i = 0; i < s.time.length; i++) {
      const px = x(s.time[i]), py = y(v[i]);
      if (i && s.time[i] - s.time[i - 1] > 2) g.moveTo(px, py); else if (i) g.lineTo(px, py); else g.moveTo(px, py);
    }
    if (s.time.length === 1) g.arc(x(s.time[0]), y(v[0]), 1.5, 0, 2 * Math.PI);
    g.stroke();
  }
}

async function poll() {
  let again = 1000;
  try {
    const answer = await fetch("rows?after=" + encodeURIComponent(after), {cache: "no-store"});
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const d = await answer.json();
    const keys = Object.keys(d.people);
    for (const key of keys) merge(key, d.people[key]);
    if (d.files.length) after = d.files[d.files.length - 1];
    if (keys.length) lastUpdate = new Date();
    total = {rows: d.rows, rejects: d.rejects, malformed: d.malformed};
    pending = d.pending;
    if (pending) again = 50;
    document.getElementById("waiting").textContent = d.exists
      ? "waiting for rows in " + CONFIG.folder
      : "waiting for rows in " + CONFIG.folder + " (the folder does not exist yet)";
    render();
  } catch (e) {
    document.getElementById("summary").innerHTML =
      '<span class="error">cannot reach the server (' + String(e.message || e).replace(/</g, "&lt;") +
      "); retrying</span>";
  }
  setTimeout(poll, again);
}
window.addEventListener("resize", () => {
  for (const k in people) if (people[k].el) draw(people[k].el.querySelector("canvas"), people[k].data);
});
poll();
</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# The command line

def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, got {text}")
    return value


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream watch",
        description="Serve a live page of a live-predict output folder: per person (crew, seat, "
                    "experiment) the last minutes of the four class probabilities and the current "
                    "state, updated every second as part files arrive. Standard library only; the "
                    "page downloads nothing. Ctrl-C stops it.")
    parser.add_argument("--live", metavar="DIR", required=True,
                        help="the live output folder to watch (it may not exist yet: the page waits for it)")
    parser.add_argument("--port", metavar="N", type=_port, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0: a free one, printed)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; any "
                             "other address, e.g. 0.0.0.0, exposes the page and the predictions to "
                             "the network, without authentication)")
    parser.add_argument("--minutes", metavar="M", type=console.number_of("minutes", inclusive=False),
                        default=DEFAULT_MINUTES,
                        help=f"how much history each person's plot shows, in minutes of the rows' "
                             f"own time (default {DEFAULT_MINUTES:g})")
    console.add_verbose(parser)
    return parser.parse_args(argv)


@failure.command("watch")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    if os.path.exists(args.live) and not os.path.isdir(args.live):
        raise ValueError(f"--live {args.live}: not a folder")
    watch = Watch(args.live, args.host, args.port, args.minutes)
    try:
        print(f"crewstream watch: serving {args.live} on {watch.url} (Ctrl-C stops)", flush=True)
        watch.serve()
    finally:
        watch.close()
    return 0


if __name__ == "__main__":
    failure.run_process(main)
