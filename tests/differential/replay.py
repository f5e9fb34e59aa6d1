"""Replay one policy through the kernel differential harness and print every disagreement:

    python3 -m tests.differential.replay .fwgen-failures/abc123.yaml
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.differential.harness import open_labs
from tests.differential.test_differential import run_policy
from tests.kernel.netns import kernel_log_capture


def main(paths: list[str]) -> int:
    labs = open_labs()
    failed = 0
    try:
        with kernel_log_capture() as log, tempfile.TemporaryDirectory() as tmp:
            for path in paths:
                _, reports = run_policy(labs, log, Path(path).read_text(encoding="utf-8"), Path(tmp))
                for report in reports:
                    print(f"{path}: {report.target}: {len(report.outcomes)} probes, {len(report.problems)} problems")
                    for problem in report.problems[:30]:
                        print("   ", problem)
                    failed += bool(report.problems)
    finally:
        for lab in labs.values():
            lab.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
