"""`crewstream watch`: the live page of a live-predict output folder.

The server is started in-process (crewstream.watch.Watch on port 0) for `/rows`: per-person
series downsampled to at most 4 points per second, the state (argmax of the last row), `after=`
reads only newer files, other files ignored, a malformed file skipped. The command itself runs as
a user runs it (`python -m crewstream.cli watch`) for the port-in-use error and, with Debian's
chromium, a real browser: the page's DOM has one panel per person with its state, the state follows
new files, and a screenshot (copied to tests/artifacts/watch.png when CREWSTREAM_ARTIFACTS is set).
"""

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from crewstream import watch
from tfrecords_schema import live

REPO = Path(__file__).resolve().parents[2]
TICK_MS = 1_700_000_000_000
HZ = 256
LABELS = ("A", "B", "C", "D")


def rows_of(crew, seat, experiment, start, seconds, dominant, hz=HZ, first_id=0):
    """`seconds` of rows at `hz` from time `start`; class `dominant` at 0.7 + a wobble, the rest
    shared 0.5 / 0.3 / 0.2."""
    rows = []
    for i in range(int(round(seconds * hz))):
        t = start + i / hz
        high = 0.7 + 0.2 * math.sin(t)
        shares = iter((0.5, 0.3, 0.2))
        probabilities = {label: (high if label == dominant else (1 - high) * next(shares)) for label in LABELS}
        rows.append({"id": first_id + i, **probabilities, "crew": crew, "seat": seat,
                     "experiment": experiment, "time": round(t, 6)})
    return rows


def write_part(folder, tick, rows, rejects=False, text=None):
    """Tick `tick`'s file, written under a hidden name and renamed into place as the job does."""
    name = live.part_name(TICK_MS + 1000 * tick, tick, rejects=rejects)
    hidden = os.path.join(folder, "." + name)
    with open(hidden, "w", newline="") as f:
        if text is not None:
            f.write(text)
        else:
            f.write(",".join(live.COLUMNS) + "\n")
            for row in rows:
                f.write(",".join(_cell(row[c]) for c in live.COLUMNS) + "\n")
    os.replace(hidden, os.path.join(folder, name))
    return name


def _cell(value):
    return f"{value:.9g}" if isinstance(value, float) else str(value)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.status, answer.headers.get("Content-Type"), answer.read()


def get_rows(server, after=""):
    status, content_type, body = get(server.url + "rows?after=" + after)
    assert status == 200 and content_type == "application/json"
    return json.loads(body)


@pytest.fixture
def serve():
    servers = []

    def start(folder, **kwargs):
        server = watch.Watch(str(folder), port=0, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_rows_are_per_person_downsampled_with_the_state_of_the_last_row(tmp_path, serve):
    names = [write_part(tmp_path, 0, rows_of(1, 0, "LOFT", 0.0, 1.0, "A") + rows_of(1, 1, "LOFT", 0.0, 1.0, "C")),
             write_part(tmp_path, 1, rows_of(1, 0, "LOFT", 1.0, 1.0, "A") + rows_of(1, 1, "LOFT", 1.0, 1.0, "C")),
             write_part(tmp_path, 2, rows_of(1, 0, "LOFT", 2.0, 1.0, "B") + rows_of(1, 1, "LOFT", 2.0, 1.0, "D"))]
    server = serve(tmp_path)
    assert server.host == "127.0.0.1"
    data = get_rows(server)

    assert data["files"] == [names[-1]] and data["exists"] is True
    assert data["rows"] == 3 * 2 * HZ and data["rejects"] == 0 and data["malformed"] == 0
    assert sorted(data["people"]) == ["crew 1 seat 0 LOFT", "crew 1 seat 1 LOFT"]
    for key, (early, late) in {"crew 1 seat 0 LOFT": ("A", "B"), "crew 1 seat 1 LOFT": ("C", "D")}.items():
        person = data["people"][key]
        times = person["time"]
        # 768 rows over 3 s: one point per quarter second, in order, each the mean of its 64 rows
        assert len(times) == 3 * watch.POINTS_PER_SECOND and times == sorted(times)
        assert times[0] == 0.0 and times[-1] == 2.75
        for label in LABELS:
            assert len(person[label]) == len(times)
            assert all(0.0 <= p <= 1.0 for p in person[label])
        expected = [0.7 + 0.2 * sum(math.sin(t + i / HZ) for i in range(64)) / 64 for t in times]
        dominant = [early if t < 2 else late for t in times]
        for i, label in enumerate(dominant):
            assert person[label][i] == pytest.approx(expected[i], abs=1e-3)
        last_time = 3.0 - 1 / HZ
        last_high = float(f"{0.7 + 0.2 * math.sin(round(last_time, 6)):.9g}")
        assert person["state"] == late and person["probability"] == pytest.approx(last_high, abs=1e-4)
        assert person["updated"] == pytest.approx(last_time)
        assert person["last"][late] == pytest.approx(last_high, abs=1e-4)
        assert (person["crew"], person["seat"], person["experiment"]) == ("1", key[12], "LOFT")


def test_the_state_is_the_last_row_even_when_it_alone_differs(tmp_path, serve):
    rows = rows_of(2, 0, "LOFT", 1.0, 1.0, "A")
    rows[-1].update(A=0.1, B=0.2, C=0.3, D=0.4)  # the last row only: its bucket's mean is still A
    write_part(tmp_path, 0, rows)
    person = get_rows(serve(tmp_path))["people"]["crew 2 seat 0 LOFT"]
    assert person["state"] == "D" and person["probability"] == 0.4
    assert person["A"][-1] > 0.5


def test_downsampling_bounds_the_points_to_four_per_second_at_any_rate(tmp_path, serve):
    # 2048 rows per second for 4 s, in 8 files of half a second
    for tick in range(8):
        write_part(tmp_path, tick, rows_of(3, 1, "LOFT", tick / 2, 0.5, "C", hz=2048, first_id=tick * 1024))
    person = get_rows(serve(tmp_path))["people"]["crew 3 seat 1 LOFT"]
    assert len(person["time"]) == 16
    assert all(b - a == pytest.approx(0.25) for a, b in zip(person["time"], person["time"][1:]))


def test_each_person_keeps_only_the_last_minutes_of_their_own_time(tmp_path, serve):
    write_part(tmp_path, 0, rows_of(1, 0, "LOFT", 0.0, 10.0, "A", hz=8) + rows_of(1, 1, "LOFT", 100.0, 2.0, "B", hz=8))
    data = get_rows(serve(tmp_path, minutes=0.05))  # 3 s
    assert data["minutes"] == 0.05
    seat0, seat1 = data["people"]["crew 1 seat 0 LOFT"], data["people"]["crew 1 seat 1 LOFT"]
    assert seat0["time"][0] >= 10.0 - 1 / 8 - 3.0 - 0.25 and seat0["time"][-1] == 9.75
    assert len(seat0["time"]) <= 3 * 4 + 1
    assert seat1["time"][0] == 100.0 and seat1["time"][-1] == 101.75  # its own clock, all within 3 s


def test_after_returns_only_the_rows_of_newer_files(tmp_path, serve):
    first = write_part(tmp_path, 0, rows_of(1, 0, "LOFT", 0.0, 1.0, "A") + rows_of(1, 1, "LOFT", 0.0, 1.0, "A"))
    server = serve(tmp_path)
    data = get_rows(server)
    assert data["files"] == [first] and len(data["people"]) == 2

    again = get_rows(server, after=first)
    assert again["files"] == [first] and again["people"] == {} and again["rows"] == 2 * HZ

    second = write_part(tmp_path, 1, rows_of(1, 0, "LOFT", 1.0, 1.0, "D"))
    newer = get_rows(server, after=first)
    assert newer["files"] == [second] and list(newer["people"]) == ["crew 1 seat 0 LOFT"]
    person = newer["people"]["crew 1 seat 0 LOFT"]
    assert person["time"] == [1.0, 1.25, 1.5, 1.75] and person["state"] == "D"
    assert newer["rows"] == 3 * HZ

    everything = get_rows(server)  # a new page: all the points kept, each file read once
    assert len(everything["people"]["crew 1 seat 0 LOFT"]["time"]) == 8
    assert everything["people"]["crew 1 seat 1 LOFT"]["state"] == "A" and everything["rows"] == 3 * HZ


def test_other_files_are_ignored_and_rejects_counted(tmp_path, serve):
    part = write_part(tmp_path, 0, rows_of(1, 0, "LOFT", 0.0, 1.0, "B"))
    hidden = "." + live.part_name(TICK_MS + 5000, 5)  # being written: half a line
    (tmp_path / hidden).write_text("id,A,B,C,D,crew,seat,exp")
    (tmp_path / ".crewstream.json").write_text("{}")
    (tmp_path / ".crewstream.lock").write_text("")
    (tmp_path / "notes.csv").write_text("not,a,part\n")
    (tmp_path / "part-1-2.csv").write_text("garbage\n")
    (tmp_path / (live.part_name(TICK_MS, 9) + ".tmp")).write_text("garbage\n")
    (tmp_path / "sub").mkdir()
    rejects = "file,line,column,reason,id,text\n" + 'test.csv,3,time,not a number,7,"x,\ny"\n' * 3
    write_part(tmp_path, 0, None, rejects=True, text=rejects)
    data = get_rows(serve(tmp_path))
    assert data["files"] == [part] and data["malformed"] == 0
    assert data["rows"] == HZ and list(data["people"]) == ["crew 1 seat 0 LOFT"]
    assert data["rejects"] == 3


def test_a_malformed_file_is_skipped_with_one_warning(tmp_path, serve, caplog):
    write_part(tmp_path, 0, rows_of(1, 0, "LOFT", 0.0, 1.0, "A"))
    bad_header = write_part(tmp_path, 1, None, text="id,A,B\n1,0.5,0.5\n")
    bad_number = write_part(tmp_path, 2, None, text=",".join(live.COLUMNS) + "\n1,0.1,x,0.3,0.4,1,0,LOFT,1.5\n")
    short_row = write_part(tmp_path, 3, None, text=",".join(live.COLUMNS) + "\n1,0.1,0.2\n")
    not_utf8 = write_part(tmp_path, 4, None, text="")
    (tmp_path / not_utf8).write_bytes(b"\xff\xfe\x00id")
    last = write_part(tmp_path, 5, rows_of(1, 0, "LOFT", 1.0, 1.0, "C"))
    server = serve(tmp_path)
    with caplog.at_level(logging.WARNING, logger="crewstream.watch"):
        data = get_rows(server)
        again = get_rows(server)
    assert data["malformed"] == 4 and again["malformed"] == 4
    assert data["files"] == [last] and data["rows"] == 2 * HZ
    assert data["people"]["crew 1 seat 0 LOFT"]["state"] == "C"
    warnings = [r.getMessage() for r in caplog.records if r.name == "crewstream.watch"]
    assert len(warnings) == 4  # one per file, not one per request
    for name in (bad_header, bad_number, short_row, not_utf8):
        assert sum(name in w for w in warnings) == 1


def test_a_missing_folder_is_waited_for(tmp_path, serve):
    folder = tmp_path / "live"
    server = serve(folder)
    data = get_rows(server)
    assert data["exists"] is False and data["people"] == {} and data["files"] == []
    status, content_type, page = get(server.url)
    assert status == 200 and content_type.startswith("text/html")
    assert b"waiting for rows in" in page and str(folder).encode() in page
    folder.mkdir()
    assert get_rows(server)["exists"] is True
    write_part(folder, 0, rows_of(1, 0, "LOFT", 0.0, 0.5, "A"))
    assert list(get_rows(server)["people"]) == ["crew 1 seat 0 LOFT"]


def test_the_page_downloads_nothing(tmp_path, serve):
    server = serve(tmp_path / "<b>")
    page = get(server.url)[2].decode()
    assert '<canvas>' in page and 'getContext("2d")' in page  # drawn by hand
    assert not re.search(r"https?://", page)  # no CDN, no font, no script from elsewhere
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)=", page)
    assert "<b>" not in page.split("<body>")[1].split("<script>")[0]  # the folder's name is escaped
    with pytest.raises(urllib.error.HTTPError) as not_found:
        get(server.url + "nope")
    assert not_found.value.code == 404


def test_the_defaults_bind_this_machine_only():
    args = watch._parse_args(["--live", "x"])
    assert (args.host, args.port, args.minutes) == ("127.0.0.1", 8765, 5.0)
    assert watch.Watch.__init__.__defaults__[0] == "127.0.0.1"


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert watch.main(["--live", str(tmp_path), "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"crewstream watch: error: --host 127.0.0.1 --port {port}: cannot listen: address already in use\n"


def test_bad_values_are_usage_errors(tmp_path, capsys):
    for argv in (["--live", str(tmp_path), "--minutes", "0"], ["--live", str(tmp_path), "--port", "70000"], []):
        with pytest.raises(SystemExit) as exit_:
            watch.main(argv)
        assert exit_.value.code == 2
    (tmp_path / "file").write_text("")
    assert watch.main(["--live", str(tmp_path / "file"), "--port", "0"]) == 1
    assert capsys.readouterr().err.endswith(f"crewstream watch: error: --live {tmp_path / 'file'}: not a folder\n")


# ---------------------------------------------------------------------------------------------
# The command and a real browser

@contextlib.contextmanager
def watch_command(folder, *flags):
    """`crewstream watch --live FOLDER --port 0` as a user runs it; yields (process, url)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    child = subprocess.Popen([sys.executable, "-m", "crewstream.cli", "watch", "--live", str(folder), "--port", "0",
                              *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        match = re.fullmatch(rf"crewstream watch: serving {re.escape(str(folder))} on "
                             r"(http://127\.0\.0\.1:(\d+)/) \(Ctrl-C stops\)\n", line)
        assert match, (line, child.stderr.read() if child.poll() is not None else "")
        yield child, match.group(1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


class _Panels(HTMLParser):
    """person -> data-state of the `class="person"` panels of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.panels, self._person = {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "person" in classes:
            self._person = attrs["data-person"]
            self.panels[self._person] = None
        elif "state" in classes and self._person is not None:
            self.panels[self._person] = attrs.get("data-state")


def chromium(*args, profile):
    result = subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", "--virtual-time-budget=4000", *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dump_panels(url, profile):
    dom = chromium("--dump-dom", url, profile=profile)
    parser = _Panels()
    parser.feed(dom)
    return parser.panels, dom


def png_header_and_bytes(path):
    """(width, height, number of distinct byte values in the image data) of a PNG, read with the
    standard library: one color all over (a blank page) filters to a handful of byte values."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    return header[0], header[1], len(set(zlib.decompress(b"".join(chunks))))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed: apt-get install chromium")
def test_a_browser_shows_one_panel_per_person_and_follows_the_state(tmp_path):
    folder = tmp_path / "live"  # created after the server starts: it waits for it
    people = [(1, 0, "A"), (1, 1, "C"), (2, 0, "B"), (2, 1, "A")]
    with watch_command(folder, "--minutes", "1") as (child, url):
        panels, dom = dump_panels(url, tmp_path / "profile")
        assert panels == {} and f"waiting for rows in {folder}" in dom

        folder.mkdir()
        for tick in range(40):  # 40 s of 16 Hz rows, one file a second
            write_part(folder, tick, [row for crew, seat, label in people
                                      for row in rows_of(crew, seat, "LOFT", float(tick), 1.0, label, hz=16)])
        panels, dom = dump_panels(url, tmp_path / "profile")
        assert panels == {f"crew {crew} seat {seat} LOFT": label for crew, seat, label in people}, dom[-3000:]
        assert dom.count('class="person"') == 4 and re.search(r"<b>2,?560</b> rows, <b>4</b> people", dom)

        # later: crew 2 seat 1 is diverted (D), crew 1 seat 0 startled (B)
        for tick in range(40, 50):
            write_part(folder, tick, [row for crew, seat, label in people
                                      for row in rows_of(crew, seat, "LOFT", float(tick), 1.0,
                                                         {(2, 1): "D", (1, 0): "B"}.get((crew, seat), label), hz=16)])
        panels, _ = dump_panels(url, tmp_path / "profile")
        assert panels == {"crew 1 seat 0 LOFT": "B", "crew 1 seat 1 LOFT": "C",
                          "crew 2 seat 0 LOFT": "B", "crew 2 seat 1 LOFT": "D"}

        screenshot = tmp_path / "watch.png"
        chromium(f"--screenshot={screenshot}", "--window-size=1280,800", "--hide-scrollbars", url,
                 profile=tmp_path / "profile")
        assert screenshot.stat().st_size > 10_000
        width, height, values = png_header_and_bytes(screenshot)
        assert (width, height) == (1280, 800) and values > 100  # text, four colored lines, labels
        if os.environ.get("CREWSTREAM_ARTIFACTS"):
            (REPO / "tests" / "artifacts").mkdir(exist_ok=True)
            shutil.copy(screenshot, REPO / "tests" / "artifacts" / "watch.png")

        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        assert child.stderr.read() == "crewstream watch: interrupted (SIGTERM)\n"
