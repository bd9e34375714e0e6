"""The scheduled jobs, run by Dagster's own runner (`execute_in_process`): they load with their schedules,
retrain and promote through the registry, and a failing step is retried with backoff and then fails the run
visibly, leaving the served champion as it was."""

from __future__ import annotations

import dagster as dg
import pytest

from core import model_registry as mr
from pipelines.lifecycle.orchestrator import Platform, build
from pipelines.lifecycle.params import LifecycleParams, ScheduleParams
from pipelines.tabular import train
from tests.conftest import embedded_settings, platform_overrides
from tests.tabular_world import write_spec, write_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("orchestrated")
    spec = write_world(root, "binary")
    spec["sources"][1]["columns"]["leak"]["feature"] = False
    settings = embedded_settings(root, specs_dir=root / "specs")
    write_spec(settings.specs_dir, spec)
    overrides = platform_overrides(settings)
    lp = LifecycleParams(schedule=ScheduleParams(retries=2, retry_delay_s=0.01))
    return settings, build(lp), Platform(overrides=overrides)


def test_the_definitions_load_with_their_schedules():
    from pipelines.lifecycle.orchestrator import defs

    dg.Definitions.validate_loadable(defs)
    names = {s.name: s.cron_schedule for s in defs.schedules}
    assert names == {"materialize_job_schedule": "15 * * * *", "monitor_job_schedule": "0 6 * * *"}
    assert {j.name for j in defs.jobs} >= {"materialize_job", "monitor_job", "retrain_job"}
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules)
    # the online store's watch (tests/integration/test_faults.py runs it against a Redis that lost its data)
    sensors = {s.name: (s.minimum_interval_seconds, s.job_name, s.default_status) for s in defs.sensors}
    assert sensors == {"online_store_sensor": (30, "materialize_job", dg.DefaultSensorStatus.RUNNING)}


def test_retrain_job_trains_registers_and_promotes(world):
    settings, defs, platform = world
    res = defs.resolve_job_def("retrain_job").execute_in_process(
        resources={"platform": platform},
        run_config={"ops": {"retrain_named": {"config": {"models": ["shop"]}}}},
    )
    assert res.success
    (row,) = res.output_for_node("retrain_named")
    assert row["model"] == "shop" and row["promoted"] and row["reason"] == "no champion yet"
    assert str(mr.version_by_alias(settings, "shop", mr.CHAMPION).version) == "1"
    # the monitor job: too few logged predictions for a verdict, so nothing is retrained
    res = defs.resolve_job_def("monitor_job").execute_in_process(resources={"platform": platform})
    assert res.success and res.output_for_node("monitor_models") == []
    assert res.output_for_node("retrain_flagged") == []


def test_a_failing_step_is_retried_then_fails_visibly_and_the_champion_stays(world, monkeypatch):
    settings, defs, platform = world
    before = mr.version_by_alias(settings, "shop", mr.CHAMPION)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("disk full (planted)")

    monkeypatch.setattr(train, "run", broken)
    res = defs.resolve_job_def("retrain_job").execute_in_process(
        resources={"platform": platform},
        run_config={"ops": {"retrain_named": {"config": {"models": ["shop"]}}}},
        raise_on_error=False,
    )
    assert not res.success
    assert len(calls) == 3  # the first try and 2 retries
    retries = [e for e in res.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2
    failure = next(e for e in res.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "disk full (planted)" in str(failure.event_specific_data.error)
    after = mr.version_by_alias(settings, "shop", mr.CHAMPION)
    assert after.version == before.version
