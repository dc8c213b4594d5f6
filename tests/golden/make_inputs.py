"""How tests/golden/inputs and tests/golden/models were made (once, with crewstream 0.1.0 as of
2026-12-06; kept so the golden test does not depend on today's synth or trainer):

    crewstream synth --output S --crews 1,2 --seconds 2 --test-seconds 2 --seed 3
    python tests/golden/make_inputs.py S        # one bad row in each file, gzip -9 into inputs/
    crewstream preprocess --input inputs/train.csv.gz --output seq --layout sequence --window 16 \
        --eval-crews 2 --num-shards 2 --chunk-rows 64 --block-rows 300
    crewstream train --data seq --model-dir tcn --model tcn --filters 8 --levels 1 \
        --kernel-size 3 --window 16 --norm-rows 8 --epochs 1
    crewstream preprocess --input inputs/train.csv.gz --output win --window 16 --stride 16 \
        --eval-crews 2 --num-shards 2 --block-rows 300
    crewstream train --data win --model-dir lstm --model lstm --units 8 --epochs 1
    (models/tcn/serving and models/lstm/serving are those models' serving/ folders)
"""

import gzip
import os
import sys


def _with_bad_row(path: str, source_line: int, column: int, text: str, at: int) -> bytes:
    lines = open(path).read().splitlines()
    bad = lines[source_line].split(",")
    bad[column] = text
    lines.insert(at, ",".join(bad))
    return ("\n".join(lines) + "\n").encode()


def main(sample: str) -> None:
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inputs")
    os.makedirs(out, exist_ok=True)
    for name, data in (("train.csv", _with_bad_row(os.path.join(sample, "train.csv"), 100, 5, "oops", 200)),
                       ("test.csv", _with_bad_row(os.path.join(sample, "test.csv"), 50, 6, "nan", 60))):
        with gzip.GzipFile(os.path.join(out, name + ".gz"), "wb", compresslevel=9, mtime=0) as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
