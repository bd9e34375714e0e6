"""The scheduler: Dagster jobs and schedules for what keeps models fresh.

    materialize_job   new data in: each spec'd model's ingest (validation, quarantine), then the online
                      store up to date (pipelines/materialize.py: feast apply, then a reload of the
                      feature tables that changed since the last run)                  cron: materialize_cron
    monitor_job       the monitor on every served champion; the models whose verdict says so are retrained
                      (fresh training set, challenger, gate, promotion)                  cron: monitor_cron
    retrain_job       retrain the models named in its config, on demand
    online_store_sensor  every `online_check_s`: if the online store has no materialization receipt for a
                      view it should hold (core/online_receipt.py: Redis restarted empty), a
                      materialize_job run, unless one is already queued or running

Every op retries `retries` times with exponential backoff from `retry_delay_s` (params.yaml
`lifecycle.schedule`); a failure is a failed Dagster run, shown by `dagster dev` (the web UI) and in the
run's event log. Promotion is the last step of a retrain, after the gate, so a job that fails anywhere
leaves the served champion as it was.

Why Dagster, not Airflow: Airflow 3.3 resolves in this environment only with FastAPI <= 0.136 (the API
pins 0.165), so it would need a virtualenv of its own and would run our code through subprocesses; Dagster
1.13 installs beside Feast, MLflow and FastAPI, runs our functions in-process, and tests a job with its own
runner (`execute_in_process`), which tests/pipeline/test_lifecycle_orchestrator.py does.

    DAGSTER_HOME=$PWD/data/dagster dagster dev -m pipelines.lifecycle.orchestrator   # UI + schedules
    dagster job execute -m pipelines.lifecycle.orchestrator -j monitor_job          # one run now
"""

from typing import Any

import dagster as dg

from core.settings import ROOT, Settings
from pipelines.lifecycle.params import LifecycleParams


class Platform(dg.ConfigurableResource):
    """The platform's settings for a run: the environment's, with `overrides` (Settings field -> value)."""

    overrides: dict[str, str] = {}
    params_path: str = str(ROOT / "params.yaml")

    def settings(self) -> Settings:
        return Settings(**self.overrides)

    def lifecycle(self) -> LifecycleParams:
        from pipelines.lifecycle.__main__ import lifecycle_params

        return lifecycle_params(self.params_path)


class Refresh(dg.Config):
    ingest: bool = True  # false: reload the online store only (the sensor's runs: the offline data is intact)


class Models(dg.Config):
    models: list[str] = []  # empty: every registered model


def build(lp: LifecycleParams | None = None) -> dg.Definitions:
    lp = lp or LifecycleParams()
    s = lp.schedule
    policy = dg.RetryPolicy(max_retries=s.retries, delay=s.retry_delay_s, backoff=dg.Backoff.EXPONENTIAL)

    @dg.op(retry_policy=policy, description="ingest what arrived, feast apply, reload the changed tables")
    def materialize_online(context: dg.OpExecutionContext, config: Refresh, platform: Platform) -> str:
        from pipelines.lifecycle.retrain import refresh_data
        from pipelines.materialize import sync_online

        settings = platform.settings()
        outcome = refresh_data(settings) if config.ingest else sync_online(settings)
        context.log.info(f"online store: {outcome}")
        return outcome

    @dg.op(retry_policy=policy, description="drift and live quality of each served champion")
    def monitor_models(context: dg.OpExecutionContext, config: Models, platform: Platform) -> list[str]:
        from core import model_registry as mr
        from pipelines.lifecycle.monitor import monitor

        settings, params = platform.settings(), platform.lifecycle()
        names = config.models or (mr.registered_names(settings) if mr.store_exists(settings) else [])
        due = []
        for name in names:
            res = monitor(settings, name, params.monitor)
            context.log.info(f"{name}: retrain={res.retrain} {res.reasons}")
            context.add_output_metadata({name: res.to_json()})
            if res.retrain:
                due.append(name)
        return due

    def _retrain(
        context: dg.OpExecutionContext, names: list[str], platform: Platform
    ) -> list[dict[str, Any]]:
        from pipelines.lifecycle.retrain import retrain

        settings, params = platform.settings(), platform.lifecycle()
        out = []
        for name in names:
            d = retrain(settings, name, params)
            row = {"model": name, "promoted": bool(d and d.promote), "reason": d.reason if d else "no model"}
            context.log.info(str(row))
            out.append(row)
        return out

    @dg.op(retry_policy=policy, description="retrain the models the monitor named")
    def retrain_flagged(
        context: dg.OpExecutionContext, names: list[str], platform: Platform
    ) -> list[dict[str, Any]]:
        return _retrain(context, names, platform)

    @dg.op(retry_policy=policy, description="retrain the models named in the config")
    def retrain_named(
        context: dg.OpExecutionContext, config: Models, platform: Platform
    ) -> list[dict[str, Any]]:
        return _retrain(context, config.models, platform)

    @dg.job(description="the online store up to date")
    def materialize_job() -> None:
        materialize_online()

    @dg.job(description="monitor the champions; retrain where a threshold was crossed")
    def monitor_job() -> None:
        retrain_flagged(monitor_models())

    @dg.job(description="retrain named models: training set, challenger, gate, promotion")
    def retrain_job() -> None:
        retrain_named()

    @dg.sensor(
        job=materialize_job,
        minimum_interval_seconds=s.online_check_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="re-materialize when the online store has lost its data",
    )
    def online_store_sensor(context: dg.SensorEvaluationContext, platform: Platform) -> dg.SensorResult:
        from core.online_receipt import missing_views
        from pipelines.materialize import online_store_views

        try:
            store, views = online_store_views(platform.settings())
            lost = missing_views(store, views)
        except Exception as e:  # the store is unreachable: nothing to reload into yet
            return dg.SensorResult(skip_reason=f"online store unreachable: {type(e).__name__}: {e}")
        if not lost:
            return dg.SensorResult(skip_reason="online store holds every view's receipt")
        busy = context.instance.get_runs(
            dg.RunsFilter(
                job_name="materialize_job",
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            ),
            limit=1,
        )
        if busy:
            return dg.SensorResult(skip_reason=f"no receipt for {lost}; materialize_job already running")
        context.log.info(f"online store has no receipt for {lost}: re-materializing")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_config={"ops": {"materialize_online": {"config": {"ingest": False}}}},
                    tags={"reason": f"no receipt: {','.join(lost)}"},
                )
            ]
        )

    return dg.Definitions(
        jobs=[materialize_job, monitor_job, retrain_job],
        sensors=[online_store_sensor],
        schedules=[
            # on from the start: `make scheduler` runs them without a click in the UI
            dg.ScheduleDefinition(
                job=materialize_job,
                cron_schedule=s.materialize_cron,
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
            dg.ScheduleDefinition(
                job=monitor_job, cron_schedule=s.monitor_cron, default_status=dg.DefaultScheduleStatus.RUNNING
            ),
        ],
        resources={"platform": Platform()},
    )


def _project_definitions() -> dg.Definitions:
    from pipelines.lifecycle.__main__ import lifecycle_params

    return build(lifecycle_params(str(ROOT / "params.yaml")))


defs = _project_definitions()
