"""Suite-wide pytest settings that pyproject.toml cannot express."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Property tests are judged on what they find, not on how long one example takes: on a
# loaded 2-core machine (CI, several test workers) hypothesis's default 200 ms deadline
# failed a correct plan-property example once (tests/unit/test_plan_properties.py).
settings.register_profile("project", deadline=None)
settings.load_profile("project")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``-s`` means "show me the test's output", which pytest-xdist's workers do not pass
    on (docs/reliability.md runs scenarios with ``pytest -s`` to print their figures). As
    xdist itself does for ``--pdb``: the ``-n auto`` of pyproject.toml's addopts yields to
    one process, unless ``-n`` is on the command line."""
    explicit_n = any(arg.startswith(("-n", "--numprocesses")) for arg in config.invocation_params.args)
    if config.getoption("capture", None) == "no" and not explicit_n and hasattr(config.option, "numprocesses"):
        config.option.numprocesses = 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Spread the end-to-end (and browser) files evenly through the run instead of running them first.

    They hold a few tests of 5-50 s each, the rest hundreds of tests of milliseconds. In
    collection order (tests/e2e first) the progress bar sat at 0-7 % for most of the run;
    and xdist's worksteal gives each worker one contiguous share of this list, so a share
    of the e2e tests in each keeps the workers equally busy with little stealing (a stolen
    test may set up its module's fixtures a second time). Order within a file is kept."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    heavy = [f for f in files if f.startswith(("tests/e2e/", "tests/browser/"))]
    light = [f for f in files if f not in heavy]
    if not heavy or not light:
        return
    order: list[str] = []
    per_heavy = len(light) / len(heavy)
    taken = 0
    for i, name in enumerate(heavy):
        order.append(name)
        upto = round((i + 1) * per_heavy)
        order.extend(light[taken:upto])
        taken = upto
    order.extend(light[taken:])
    items[:] = [item for name in order for item in files[name]]
