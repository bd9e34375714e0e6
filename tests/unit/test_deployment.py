"""docker-compose.yml, the Dockerfile and CI must agree with the settings and entry points of the code.

Static: tests/integration/test_compose_stack.py runs the same services' commands against real services.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from core.settings import ROOT, Settings

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CI = (ROOT / ".ci" / "run").read_text()
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text().splitlines()
    if "=" in line and line[0] != "#"
)
DEFAULT = {"redis", "postgres", "rabbitmq", "migrate", "materialize", "api", "stream-worker"}
LIFECYCLE = {"register", "mlflow", "scheduler"}
OURS = {n for n, s in SERVICES.items() if str(s.get("image", "")).startswith("featureplat:")}
NOT_SETTINGS = {"DAGSTER_HOME"}  # read by Dagster itself
_VAR = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message} against `env`."""

    def one(m: re.Match) -> str:
        name, rest = m.group(1), m.group(0)[len(m.group(1)) + 2 : -1]
        if env.get(name):
            return env[name]
        if rest.startswith((":-", "-")):
            return rest.split("-", 1)[1]
        raise KeyError(f"{name} unset ({rest})")

    return _VAR.sub(one, value)


def env_of(service: str, values: dict[str, str] | None = None) -> dict[str, str]:
    if values is None:
        values = {k: v or f"secret-{k.lower()}" for k, v in ENV_EXAMPLE.items()}
    return {k: interpolate(str(v), values) for k, v in SERVICES[service].get("environment", {}).items()}


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    if cmd[:2] == ["sh", "-c"]:
        return shlex.split(cmd[2].split("exec ", 1)[1])
    return cmd


def test_services_profiles_and_images():
    default = {n for n, s in SERVICES.items() if not s.get("profiles")}
    lifecycle = {n for n, s in SERVICES.items() if "lifecycle" in s.get("profiles", [])}
    assert default == DEFAULT and lifecycle == LIFECYCLE
    targets = {n: SERVICES[n]["build"]["target"] for n in OURS}
    assert targets == {n: "runtime" for n in DEFAULT - {"redis", "postgres", "rabbitmq"}} | {
        n: "pipelines" for n in LIFECYCLE
    }
    for n in OURS:
        assert SERVICES[n]["image"] == f"featureplat:{targets[n]}"
        assert f"AS {targets[n]}" in DOCKERFILE
    # only the API (and the lifecycle UIs) publish a port: the stores stay inside the stack's network
    published = {n for n, s in SERVICES.items() if s.get("ports")}
    assert published == {"api", "mlflow", "scheduler"}
    assert SERVICES["api"]["ports"] == ["8000:8000"] and "EXPOSE 8000" in DOCKERFILE


def _module_exists(module: str) -> bool:
    base = ROOT / Path(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__main__.py").exists()


def test_every_command_is_an_entry_point_of_the_code():
    for name in OURS:
        cmd = command(name)
        if cmd[:2] == ["python", "-m"]:
            assert _module_exists(cmd[2]), (name, cmd)
            f = ROOT / Path(*cmd[2].split("."))
            f = f / "__main__.py" if f.is_dir() else f.with_suffix(".py")
            assert '__name__ == "__main__"' in f.read_text(), (name, f)
        elif cmd[0] == "uvicorn":
            module, attr = cmd[1].split(":")
            assert (
                _module_exists(module)
                and f"\n{attr} = " in (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
            )
            assert cmd[cmd.index("--port") + 1] == "8000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
        elif cmd[0] == "dagster":
            assert _module_exists(cmd[cmd.index("-m") + 1])
        else:
            assert cmd[0] == "mlflow", (name, cmd)
    assert command("api") == CMD_IN_DOCKERFILE


CMD_IN_DOCKERFILE = yaml.safe_load(re.findall(r"^CMD (\[.*\])$", DOCKERFILE.split("AS runtime")[1], re.M)[0])


def test_environment_names_are_settings_fields_and_parse():
    fields = {name.upper() for name in Settings.model_fields}
    for name in OURS:
        env = env_of(name)
        assert set(env) <= fields | NOT_SETTINGS, (name, set(env) - fields)
        s = Settings(**{k.lower(): v for k, v in env.items() if k not in NOT_SETTINGS})
        assert s.online_store == "redis" and s.offline_store == "postgres" and s.amqp_url
    env = env_of("api")
    redis = re.match(r"redis://:([^@]+)@(\w+):(\d+)/", env["REDIS_URL"])
    assert redis and redis.group(2) == "redis" and redis.group(3) == "6379"
    db = make_url(env["DATABASE_URL"])
    pg = SERVICES["postgres"]["environment"]
    assert db.host == "postgres" and db.port == 5432
    assert db.username == pg["POSTGRES_USER"] and db.database == pg["POSTGRES_DB"]
    amqp = re.match(r"amqp://([^:]+):([^@]+)@(\w+):5672/", env["AMQP_URL"])
    assert amqp and amqp.group(3) == "rabbitmq"
    # the worker's metrics listen beyond the container's loopback
    worker = env_of("stream-worker")
    assert worker["STREAM_METRICS_ADDR"] == "0.0.0.0" and int(worker["STREAM_METRICS_PORT"]) > 1024


def test_no_secret_in_the_file_every_variable_documented():
    used = set(_VAR.findall(COMPOSE_TEXT)) | set(re.findall(r"\$\$(\w+)", COMPOSE_TEXT))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD"} <= used
    assert used - {"DAGSTER_HOME"} <= set(ENV_EXAMPLE), used - set(ENV_EXAMPLE)
    assert all(not ENV_EXAMPLE[k] for k in ENV_EXAMPLE if "PASSWORD" in k)  # no default password either
    assert re.search(r"^\.env$", (ROOT / ".gitignore").read_text(), re.M)
    for s in SERVICES.values():
        for k, v in (s.get("environment") or {}).items():
            if "PASSWORD" in k or "PASS" in k:
                assert str(v).startswith("${"), (k, v)
    # the URLs carry the passwords only by interpolation: unset, compose refuses to start
    try:
        env_of("api", {})
    except KeyError as e:
        assert "PASSWORD" in str(e)
    else:
        raise AssertionError("the API's URLs must need the passwords from .env")


def _image_env() -> dict[str, str]:
    os_stage = DOCKERFILE.split("AS os", 1)[1].split("FROM ", 1)[0]
    text = re.search(r"^ENV (.*?)\n(?!\s)", os_stage, re.S | re.M).group(1).replace("\\\n", " ")
    return dict(pair.split("=", 1) for pair in text.split())


def test_volumes_land_where_the_settings_read_and_write():
    image = _image_env()
    fields = {name.upper() for name in Settings.model_fields}
    assert {"DATA_DIR", "MODELS_DIR"} <= set(image) and {"DATA_DIR", "MODELS_DIR"} <= fields
    s = Settings(data_dir=image["DATA_DIR"], models_dir=image["MODELS_DIR"])
    app = Path("/app")  # the image's WORKDIR and its ROOT (core/settings.py: the code's parent folder)
    assert "WORKDIR /app" in DOCKERFILE
    reads = {
        str(app / ROOT.joinpath("data", "features").relative_to(ROOT)): "features_dir's default",
        str(s.data_dir / "outputs"): "GET /v1/anomalies and the scoring files",
        str(s.data_dir / "clean"): "the spec'd models' rows",
        str(s.models_dir): "the model bundles",
    }
    for name in DEFAULT & OURS:
        mounts = {v.split(":")[1]: v for v in SERVICES[name]["volumes"]}
        assert mounts[str(s.data_dir)].startswith("state:"), name  # writable state, shared by the stack
        for target, what in reads.items():
            assert target in mounts and mounts[target].endswith(":ro"), (name, target, what)
        assert SERVICES[name]["read_only"] is True and "/tmp" in SERVICES[name]["tmpfs"]
    dvc = (ROOT / "dvc.yaml").read_text() + (ROOT / "specs" / "dvc.yaml").read_text()
    for source in ("data/features", "data/outputs", "data/clean", "models"):
        assert re.search(rf"\b{source}/", dvc), f"{source} is not written by any DVC stage"


def test_init_jobs_run_once_in_order_before_the_services():
    dep = {n: SERVICES[n].get("depends_on", {}) for n in SERVICES}
    assert dep["materialize"]["migrate"]["condition"] == "service_completed_successfully"
    for svc in ("api", "stream-worker"):
        assert dep[svc]["materialize"]["condition"] == "service_completed_successfully"
    assert dep["migrate"]["postgres"]["condition"] == "service_healthy"
    assert dep["materialize"]["redis"]["condition"] == "service_healthy"
    assert dep["stream-worker"]["rabbitmq"]["condition"] == "service_healthy"
    for job in ("migrate", "materialize", "register"):
        assert SERVICES[job]["restart"] == "no"
    for svc in ("redis", "postgres", "rabbitmq", "api"):
        assert SERVICES[svc]["healthcheck"]["test"], svc
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_ci_selects_the_same_services_by_the_same_variables():
    for name in ("REDIS_URL", "DATABASE_URL", "AMQP_URL"):
        assert f"export {name}=" in CI
    ci_db = make_url(re.search(r'DATABASE_URL:-([^}"]+)', CI).group(1))
    compose_db = make_url(env_of("api")["DATABASE_URL"])
    assert (ci_db.drivername, ci_db.port, ci_db.username, ci_db.database) == (
        compose_db.drivername,
        compose_db.port,
        compose_db.username,
        compose_db.database,
    )
    assert re.search(r"REDIS_URL:-redis://127\.0\.0\.1:6379/", CI)
    assert "make test" in CI


def test_postgres_urls_use_the_installed_driver():
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
