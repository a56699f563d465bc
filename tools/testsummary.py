"""Counts of a pytest run from its JUnit XML, for scripts/test's summary.

``python tools/testsummary.py REPORT.xml`` prints ``N passed, N failed, N skipped`` for one part;
``--total A.xml B.xml ...`` prints the same line for all parts together, prefixed ``total:``.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of one report; errors count as failures."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def line(passed: int, failed: int, skipped: int) -> str:
    return f"{passed} passed, {failed} failed, {skipped} skipped"


def main(argv: list[str]) -> int:
    total = argv[:1] == ["--total"]
    paths = [Path(a) for a in (argv[1:] if total else argv) if Path(a).is_file()]
    if not paths:
        return 1
    sums = [0, 0, 0]
    for path in paths:
        for i, n in enumerate(counts(path)):
            sums[i] += n
    print(("total: " if total else "") + line(*sums))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
