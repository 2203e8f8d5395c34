"""mypy over bayespk/, failing on findings that are not listed in .ci/mypy-baseline.txt.

Usage (from the repository root; `make lint` runs the first)::

    .venv/bin/python .ci/typecheck.py             # check: exit 1 on a new finding
    .venv/bin/python .ci/typecheck.py --update    # write the current findings as the baseline

The baseline lists the findings the code had when the type check was added
(``path: message [code]``, without line numbers, so edits elsewhere in a file
do not disturb it; a finding that occurs k times in a file is listed k times).
A finding beyond those fails the check. Fixing a listed finding needs no
change to the baseline (the check says how many listed ones are gone);
``--update`` drops them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
FINDING = re.compile(r"^(?P<path>[^:\s]+\.py):\d+(?::\d+)?: error: (?P<message>.*)$")


def findings(output: str) -> Counter:
    """mypy's error lines as ``path: message [code]``, counted."""
    out: Counter = Counter()
    for line in output.splitlines():
        m = FINDING.match(line.strip())
        if m:
            out[f"{m['path']}: {m['message'].strip()}"] += 1
    return out


def new_findings(current: Counter, baseline: Counter) -> list[str]:
    """Findings of ``current`` beyond those listed in ``baseline`` (each occurrence once)."""
    return sorted((current - baseline).elements())


def run_mypy() -> str:
    result = subprocess.run([sys.executable, "-m", "mypy", "bayespk"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode not in (0, 1) or (result.returncode == 1 and not findings(result.stdout)):
        sys.exit(f"mypy did not run (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def main(argv: list[str]) -> int:
    current = findings(run_mypy())
    if "--update" in argv:
        BASELINE.write_text("".join(f"{f}\n" for f in sorted(current.elements())))
        print(f"wrote {BASELINE.relative_to(ROOT)}: {sum(current.values())} findings")
        return 0
    baseline = Counter(line for line in BASELINE.read_text().splitlines() if line.strip())
    new = new_findings(current, baseline)
    gone = sum((baseline - current).values())
    if new:
        print(f"type check: {len(new)} new finding(s) of mypy (not in {BASELINE.relative_to(ROOT)}):")
        print("".join(f"  {f}\n" for f in new), end="")
        print("fix them (or, where mypy is wrong, add a `# type: ignore[code]` with the reason)")
        return 1
    print(f"type check: no new findings ({sum(current.values())} listed ones remain"
          + (f"; {gone} listed ones are gone: `.venv/bin/python .ci/typecheck.py --update` drops them)" if gone
             else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
