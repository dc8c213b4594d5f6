"""The package graph points down (docs/DESIGN.md, "The packages"): every import of every module,
those inside functions included, read from the source."""

import ast
import os
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package -> the packages it may import (itself included)
ALLOWED = {
    "tfrecords_schema": {"tfrecords_schema"},
    "cli_common": {"cli_common", "tfrecords_schema"},
    "beam_jobs": {"beam_jobs", "cli_common", "tfrecords_schema"},
    "trainer": {"trainer", "cli_common", "tfrecords_schema"},
    "crewstream": {"crewstream", "beam_jobs", "trainer", "cli_common", "tfrecords_schema"},
}


def imported_packages(source: str, package: str) -> List[Tuple[int, str]]:
    """(line, top-level package) of every import of one of ALLOWED's packages in `source` (a module
    of `package`; a relative import is its own package's)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in ALLOWED]
    return found


def violations(package: str, source: str, path: str) -> List[str]:
    return [f"{path}:{line}: {package} imports {target}" for line, target in imported_packages(source, package)
            if target not in ALLOWED[package]]


def _modules():
    for package in ALLOWED:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield package, os.path.join(folder, name)


def test_every_import_points_down():
    found = []
    for package, path in _modules():
        with open(path) as f:
            found += violations(package, f.read(), os.path.relpath(path, ROOT))
    assert found == []


def test_the_packages_are_all_checked():
    """Every installed package is in the map (benchmarks/ and tests/ stand outside it: they may import
    anything)."""
    on_disk = {name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, "__init__.py"))}
    assert on_disk - {"benchmarks", "tests"} == set(ALLOWED)


@pytest.mark.parametrize("package, source", [
    ("beam_jobs", "def f():\n    from trainer import export\n"),  # sideways, inside a function
    ("trainer", "import beam_jobs.inference\n"),
    ("tfrecords_schema", "from cli_common import console\n"),  # up
    ("cli_common", "from crewstream import cli\n"),
    ("trainer", "from crewstream.synth import generate\n"),
])
def test_an_import_that_points_up_or_sideways_is_found(package, source):
    assert len(violations(package, source, "m.py")) == 1


def test_the_contract_imports_nothing_above_it_even_relatively():
    assert violations("tfrecords_schema", "from . import record\nfrom .serving import load\n", "m.py") == []
