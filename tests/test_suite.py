"""The suite's own set-up: under `make test` (pytest-xdist, --dist loadgroup) a group mark reaches
the scheduler, so the tests of a shared trained run (conftest.SHARED_RUNS) run on one worker and the
run is trained once. pytest 9.2 with pytest-xdist 3.8 drops the mark silently (pytest-xdist#1386)."""

import pytest


@pytest.mark.xdist_group("suite_probe")
def test_an_xdist_group_mark_names_the_group_the_scheduler_sees(request):
    if not getattr(request.config.option, "loadgroup", False):  # set on the workers of --dist loadgroup
        pytest.skip("runs under make test: pytest -n 2 --dist loadgroup")
    assert request.node.nodeid.endswith("@suite_probe"), (
        f"{request.node.nodeid}: the xdist_group mark was dropped; shared runs would be trained on "
        "every worker (pin pytest<9.2, pyproject.toml)"
    )
