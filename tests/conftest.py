from __future__ import annotations

import pytest
from hypothesis import settings

# No per-example deadline for property tests: speed is measured in bench/, not in tests,
# and on a loaded machine Hypothesis's default 200 ms deadline failed an example that
# passes (tests/test_dispatch_tree.py, once in a full run under load). Every @settings
# that names no deadline inherits this.
settings.register_profile("fwgen", deadline=None)
settings.load_profile("fwgen")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true",
        help="rewrite tests/golden/ from the current output instead of comparing",
    )
