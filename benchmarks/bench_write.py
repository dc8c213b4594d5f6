"""Benchmark: what writing one large file costs on this machine, into the page cache (a plain
`open` and `write`) and written through to the disk as it goes (tfrecords_schema.file_io.open_written,
how crewstream writes its shards), side by side.

    python -m benchmarks.bench_write [--mb 3200] [--repeats 3] [--pause 40] [--dir /tmp]

Each run writes --mb MiB of random bytes in 16 MiB writes to a new file in --dir, then deletes
it; the variants alternate, with --pause seconds of rest before every run. On our VMs memory
the guest has freed goes back to the host within about half a minute, and taking a page anew
costs the guest's kernel time: the pause makes each run meet the memory a long job meets, not
the pages the previous run has just freed. Printed: wall seconds, this process's CPU user and
system seconds during the write, and the write rate, per run and as medians.
"""

import argparse
import os
import resource
import statistics
import time
from typing import Dict, List

from benchmarks.common import machine_header
from tfrecords_schema import file_io

BLOCK = 16 << 20
VARIANTS = ("page-cache", "written-through")


def write_once(variant: str, path: str, total: int, block: bytes) -> Dict[str, float]:
    """Write `total` bytes of `block` repeated to `path` the variant's way; its costs."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    opener = file_io.open_written if variant == "written-through" else (lambda p: open(p, "wb"))
    with opener(path) as out:
        written = 0
        while written < total:
            out.write(block)
            written += len(block)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    os.remove(path)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "gb_s": total / wall / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_write", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=3200, help="MiB per file (default 3200: about the windows "
                                                             "layout's shards at Kaggle size)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved (default 3)")
    parser.add_argument("--pause", type=float, default=40.0, help="seconds of rest before each run (default 40)")
    parser.add_argument("--dir", default="/tmp", help="folder of the file written (default /tmp)")
    args = parser.parse_args()
    total = -(-(args.mb << 20) // BLOCK) * BLOCK
    block = os.urandom(BLOCK)
    path = os.path.join(args.dir, f"bench-write-{os.getpid()}.bin")
    print("\n".join(machine_header()))
    print(f"- {total / 1e9:.2f} GB per run in 16 MiB writes to "
          f"{args.dir}, {args.pause:g} s of rest before each run")
    runs: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            time.sleep(args.pause)
            result = write_once(variant, path, total, block)
            runs[variant].append(result)
            print(f"  repeat {repeat + 1} {variant:<16} wall {result['wall']:6.2f} s  user {result['user']:5.2f} s  "
                  f"sys {result['sys']:5.2f} s  {result['gb_s']:5.2f} GB/s", flush=True)
    print("\n| variant | wall s (median) | CPU user s | CPU sys s | GB/s | walls |\n|---|---|---|---|---|---|")
    for variant in VARIANTS:
        r = runs[variant]
        med = {k: statistics.median(x[k] for x in r) for k in ("wall", "user", "sys", "gb_s")}
        print(f"| {variant} | {med['wall']:.2f} | {med['user']:.2f} | {med['sys']:.2f} | {med['gb_s']:.2f} | "
              + ", ".join(f"{x['wall']:.2f}" for x in r) + " |")


if __name__ == "__main__":
    main()
