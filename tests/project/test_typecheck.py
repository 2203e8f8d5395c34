"""The type check of `make lint` (.ci/typecheck.py): a finding not in the baseline fails it."""

import importlib.util
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def typecheck():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / ".ci" / "typecheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTPUT = """\
bayespk/a.py:10: error: Item "None" of "X | None" has no attribute "n"  [union-attr]
bayespk/a.py:12:5: error: Item "None" of "X | None" has no attribute "n"  [union-attr]
bayespk/a.py:30: note: By default the bodies of untyped functions are not checked  [annotation-unchecked]
bayespk/b.py:3: error: Name "y" is not defined  [name-defined]
Found 3 errors in 2 files (checked 2 source files)
"""


def test_findings_ignore_line_numbers_and_notes():
    found = typecheck().findings(OUTPUT)
    assert found == Counter({'bayespk/a.py: Item "None" of "X | None" has no attribute "n"  [union-attr]': 2,
                             'bayespk/b.py: Name "y" is not defined  [name-defined]': 1})


def test_a_finding_beyond_the_baseline_is_new():
    tc = typecheck()
    current = tc.findings(OUTPUT)
    assert tc.new_findings(current, current) == []
    # moved to other lines: still listed
    moved = tc.findings(OUTPUT.replace(":10:", ":99:").replace(":3:", ":4:"))
    assert tc.new_findings(moved, current) == []
    # a third occurrence of a listed finding, and a finding in another file
    more = OUTPUT + "bayespk/a.py:50: error: Item \"None\" of \"X | None\" has no attribute \"n\"  [union-attr]\n"
    more += "bayespk/c.py:1: error: Incompatible return value type  [return-value]\n"
    assert tc.new_findings(tc.findings(more), current) == [
        'bayespk/a.py: Item "None" of "X | None" has no attribute "n"  [union-attr]',
        "bayespk/c.py: Incompatible return value type  [return-value]"]


def test_the_baseline_is_sorted_and_names_library_files():
    lines = (ROOT / ".ci" / "mypy-baseline.txt").read_text().splitlines()
    assert lines == sorted(lines)
    assert all(line.startswith("bayespk/") and line.endswith("]") for line in lines)
