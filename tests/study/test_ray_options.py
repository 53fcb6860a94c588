"""The ``ray.init`` options a local study chooses from its spec's ``resources`` (``study.runner``)."""

from __future__ import annotations

import pytest

from study.spec import Resources


@pytest.mark.parametrize("resources, expected", [
    ({}, False),  # in-process trials: no dashboard, its start-up is seconds of a small study's fixed cost
    ({"workers_per_trial": 1}, None),  # Train workers: Ray's default (the state API frees ASHA-stopped trials' groups)
    ({"dashboard": True}, True),  # asked for: on
    ({"workers_per_trial": 1, "dashboard": False}, False),  # refused explicitly: off, even with workers
])
def test_dashboard_only_when_needed_or_asked(resources, expected):
    from study.runner import _dashboard

    assert _dashboard(Resources(**resources)) is expected


def test_failure_policy_reaches_the_trial_runtime(tmp_path):
    # guards the one name from the spec to the Tune and Train FailureConfig: resources.max_failures
    from study.runtime import trial_runtime
    from study.spec import load_spec
    from tests.study_util import tiny_spec

    assert Resources().max_failures == 2  # the default: a lost node is retried
    spec = load_spec(tiny_spec(tmp_path, "mf", resources={"max_failures": 0}))
    rt = trial_runtime(spec, 10, 0, cache_dir=tmp_path, trials_dir=tmp_path, train_storage=tmp_path,
                       classifier_searched=False)
    assert rt.max_failures == 0
