"""docker-compose.yml's stack, end to end, as its services' commands run it: the init jobs in order, then
the API and the stream worker, then the README's printed curls and the smoke test against it.

No container runtime runs here (docs/deployment.md says what was run where), so each service runs as a
process over the image's file system as the Dockerfile lays it out: the runtime target's COPY lines into
an `/app` of its own (so the code's ROOT is that folder, as in the image), the service's volumes as folders
and links in it, its environment from the compose file with the image's ENV beneath, and its command as
written. The stores are the CI's services (the compose file's host names and passwords replaced by
REDIS_URL, DATABASE_URL and AMQP_URL), with a schema, Feast project and queues of the test's own.

With STACK_ROOTFS set to a mounted image (`podman image mount featureplat:runtime`, run as root), the
commands run chrooted into it as the image's user, with its own Python and packages: the image itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.settings import ROOT
from tests.conftest import env_or_skip
from tests.unit.test_deployment import _image_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ROOTFS = os.environ.get("STACK_ROOTFS")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the Debian base image's


def _runtime_stage() -> str:
    return DOCKERFILE.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]


def _copy_image_files(app: Path) -> None:
    """The runtime target's `COPY <src>... <dest>` lines (not --from), relative to WORKDIR /app."""
    for line in re.findall(r"^COPY (?!--from)(.+)$", _runtime_stage(), re.M):
        *sources, dest = line.split()
        for src in sources:
            target = app / dest / Path(src).name if dest.endswith("/") else app / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / src, target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _merged(folder: Path, parts: dict[str, Path]) -> Path:
    """A folder holding a copy of each world's own (one volume with both worlds' tables; copies, not links,
    so that they resolve inside a chroot too)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in parts.items():
        if src.exists():
            shutil.copytree(src, folder / name)
    return folder


def _anomalies_csv(path: Path) -> None:
    """A run's anomalies.csv as api_anomaly_detect writes it (two rows): what GET /v1/anomalies serves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "date": ["2026-04-10", "2026-04-11"],
            "country": ["SE", "IN"],
            "os": ["android", "ios"],
            "count": [9_400_000.0, 10.0],
            "expected": [2_000_000.0, 50_000.0],
            "lower": [1_500_000.0, 30_000.0],
            "upper": [2_600_000.0, 80_000.0],
            "score": [55.5, -40.0],
            "segment_score": [50.0, -40.0],
            "drift_score": [None, None],
            "kind": ["spike", "outage"],
            "whole_country": [False, False],
            "whole_os": [False, False],
        }
    ).to_csv(path, index=False)


class Stack:
    """The compose file's runtime services as processes over one `/app` (see the module docstring)."""

    def __init__(self, tmp: Path, world, purchase_world, services: dict[str, str]):
        self.tag = uuid.uuid4().hex[:10]
        self.app = Path(ROOTFS) / "app" if ROOTFS else tmp / "app"
        self.state = tmp / "state"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.port, self.metrics_port = _free_port(), _free_port()
        self.services = services
        # the volumes' host sides: the two small worlds the pipeline tests build, and an anomaly run
        host = tmp / "host"
        sources = {
            "./data/features": _merged(
                host / "features",
                {"game_ltv": world.features, "purchase_propensity": purchase_world.features},
            ),
            "./data/clean": world.settings.data_dir / "clean",
            "./data/outputs": host / "outputs",
            "./models": _merged(
                host / "models",
                {"game_ltv": world.model_dir, "purchase_propensity": purchase_world.model_dir},
            ),
        }
        _anomalies_csv(host / "outputs" / "api_anomaly" / "anomalies.csv")
        self.mounts = self._mounts(sources)
        if not ROOTFS:
            _copy_image_files(self.app)
        # the image's specs are the repository's; this stack serves the small world's spec'd model
        self.specs = world.settings.specs_dir
        self._mount_all()

    def _mounts(self, sources: dict[str, Path]) -> list[tuple[Path, Path]]:
        """(host folder, path under /app) of the runtime services' volumes (one set: they share them)."""
        volumes = COMPOSE["services"]["api"]["volumes"]
        for name in ("migrate", "materialize", "stream-worker"):
            assert COMPOSE["services"][name]["volumes"] == volumes, name
        out = []
        for v in volumes:
            src, dst = v.split(":")[:2]
            assert dst.startswith("/app/"), v
            out.append((self.state if src == "state" else sources[src], Path(dst.removeprefix("/app/"))))
        return sorted(out, key=lambda m: len(m[1].parts))  # the state folder first, then what is in it

    def _mount_all(self) -> None:
        self.state.mkdir(exist_ok=True)
        for src, rel in self.mounts:
            target = self.app / rel
            if ROOTFS:
                target.mkdir(parents=True, exist_ok=True)
                subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
            elif src != self.state:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(src.resolve(), target_is_directory=True)
            else:
                target.symlink_to(src, target_is_directory=True)
        specs = self.app / "specs"
        if ROOTFS:
            subprocess.run(["mount", "--bind", str(self.specs), str(specs)], check=True)
            for system in ("proc", "dev"):
                subprocess.run(["mount", "--bind", f"/{system}", f"{ROOTFS}/{system}"], check=True)
            os.chown(self.state, 10001, 10001)
        else:
            shutil.rmtree(specs)
            shutil.copytree(self.specs, specs)

    def unmount(self) -> None:
        if ROOTFS:
            for _, rel in [*reversed(self.mounts), (None, Path("specs"))]:
                subprocess.run(["umount", str(self.app / rel)], check=False)
            for system in ("proc", "dev"):
                subprocess.run(["umount", f"{ROOTFS}/{system}"], check=False)

    def env(self, service: str) -> dict[str, str]:
        env = {k: str(v) for k, v in COMPOSE["services"][service].get("environment", {}).items()}
        env = {k: v for k, v in env.items() if "${" not in v}  # the URLs: the CI's services instead
        image = _image_env()
        app = "/app" if ROOTFS else str(self.app)
        image = {k: v.replace("/app", app) for k, v in image.items()}
        # the image's PATH adds its virtualenv to the base's; here the image's Python is this one
        image["PATH"] = image["PATH"].replace("$PATH", BASE_PATH) if ROOTFS else os.environ["PATH"]
        return {
            "HOME": "/tmp",
            **image,
            **env,
            **self.services,
            "DATABASE_SCHEMA": f"compose_{self.tag}",
            "FEAST_PROJECT": f"compose{self.tag}",
            "STREAM_EVENTS_QUEUE": f"compose.{self.tag}.page_views",
            "STREAM_PREDICTIONS_QUEUE": f"compose.{self.tag}.predictions",
            "STREAM_DEAD_LETTER_QUEUE": f"compose.{self.tag}.dead",
            **({"STREAM_METRICS_PORT": str(self.metrics_port)} if service == "stream-worker" else {}),
        }

    def command(self, service: str, cmd: list[str] | None = None) -> list[str]:
        own = cmd is None
        cmd = list(cmd or COMPOSE["services"][service]["command"])
        if own and service == "api":
            cmd[cmd.index("--port") + 1] = str(self.port)
            cmd[cmd.index("--host") + 1] = "127.0.0.1"
        if ROOTFS:
            return ["chroot", "--userspec=10001:10001", ROOTFS, "sh", "-c", 'cd /app && exec "$@"', "-", *cmd]
        if cmd[0] == "python":
            cmd[0] = sys.executable
        elif cmd[0] == "uvicorn":
            cmd = [sys.executable, "-m", *cmd]
        return cmd

    def run(self, service: str, cmd: list[str] | None = None, timeout: float = 300) -> str:
        out = subprocess.run(
            self.command(service, cmd),
            env=self.env(service),
            cwd=self.app,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, f"{service} {cmd or ''} exited {out.returncode}:\n{out.stderr[-3000:]}"
        return out.stdout

    def start(self, service: str) -> None:
        log = (self.logs / f"{service}.log").open("w")
        self.procs[service] = subprocess.Popen(
            self.command(service), env=self.env(service), cwd=self.app, stdout=log, stderr=subprocess.STDOUT
        )

    def log(self, service: str) -> str:
        return (self.logs / f"{service}.log").read_text()[-4000:]

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
            if p.poll() is None:
                p.kill()


def _depends_on(service: str) -> set[str]:
    return set(COMPOSE["services"][service].get("depends_on", {}))


def start_order() -> list[str]:
    """The default profile's runtime services in the order compose starts them (depends_on)."""
    ours = [
        n
        for n, s in COMPOSE["services"].items()
        if str(s.get("image", "")).startswith("featureplat:") and not s.get("profiles")
    ]
    order: list[str] = []
    while len(order) < len(ours):
        ready = [n for n in ours if n not in order and _depends_on(n) & set(ours) <= set(order)]
        assert ready, f"a dependency cycle among {set(ours) - set(order)}"
        order += sorted(ready)
    return order


@pytest.fixture(scope="module")
def stack(world, purchase_world, tmp_path_factory):
    services = {
        "REDIS_URL": env_or_skip("REDIS_URL"),
        "DATABASE_URL": env_or_skip("DATABASE_URL"),
        "AMQP_URL": env_or_skip("AMQP_URL"),
    }
    s = Stack(tmp_path_factory.mktemp("compose"), world, purchase_world, services)
    try:
        yield s
    finally:
        s.stop()
        _teardown(s)
        s.unmount()


def _teardown(s: Stack) -> None:
    from core.feature_store import open_store
    from core.online_receipt import teardown
    from core.settings import Settings
    from pipelines.common.offline_tables import pg_connect

    env = s.env("api")
    settings = Settings(
        redis_url=env["REDIS_URL"],
        database_url=env["DATABASE_URL"],
        database_schema=env["DATABASE_SCHEMA"],
        feast_project=env["FEAST_PROJECT"],
        feast_registry=s.state / "feast" / "registry.db",
        features_dir=s.app / "data" / "features",
    )
    with contextlib.suppress(Exception):
        teardown(open_store(settings))
    with pg_connect(env["DATABASE_URL"]) as conn:
        for schema in (env["DATABASE_SCHEMA"], f"{env['DATABASE_SCHEMA']}_mlflow"):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with contextlib.suppress(Exception):
        asyncio.run(_delete_queues(env))


async def _delete_queues(env: dict[str, str]) -> None:
    import aio_pika

    conn = await aio_pika.connect_robust(env["AMQP_URL"])
    async with conn:
        ch = await conn.channel()
        for k in ("STREAM_EVENTS_QUEUE", "STREAM_PREDICTIONS_QUEUE", "STREAM_DEAD_LETTER_QUEUE"):
            await ch.queue_delete(env[k])


def _wait_ready(s: Stack, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert s.procs["api"].poll() is None, f"the API exited:\n{s.log('api')}"
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/readyz", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"/readyz not 200 after {timeout_s} s:\n{s.log('api')}")


def test_stack_comes_up_in_compose_order_and_the_printed_curls_answer(stack):
    order = start_order()
    assert order == ["migrate", "materialize", "api", "stream-worker"]
    for name in order:
        if COMPOSE["services"][name].get("restart") == "no":  # a one-shot job: it must finish first
            stack.run(name)
        else:
            stack.start(name)
    _wait_ready(stack)
    # the README's steps for the stack: a key from inside the API's container, then the printed curls
    key = stack.run("api", ["python", "-m", "serving.auth", "demo-key"]).strip().splitlines()[-1]
    assert key.startswith("fpk_"), key
    curls = stack.run(
        "api",
        [
            "python",
            "-m",
            "pipelines.materialize",
            "--print-curl",
            "--port",
            str(stack.port),
            "--api-key",
            key,
        ],
    )
    lines = [line for line in curls.splitlines() if line.startswith("curl ")]
    assert {re.search(r"/v1/models/(\w+)/", line).group(1) for line in lines} == {
        "game_ltv",
        "purchase_propensity",
    }
    answers = subprocess.run(
        ["bash", "-c", curls], capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]}
    ).stdout
    decoded = [json.loads(a) for a in answers.replace("}{", "}\n{").splitlines() if a.strip()]
    assert len(decoded) == len(lines)
    for a in decoded:
        assert (
            a["predictions"][0]["prediction"] is not None and a["predictions"][0]["found_in_online_store"]
        ), a
    # the smoke test the CD pipeline runs, with the anomalies the data/outputs volume serves
    requests = stack.run("api", ["python", "-m", "pipelines.materialize", "--print-requests"])
    (stack.state / "requests.jsonl").write_text(requests)
    smoke = stack.run(
        "api",
        [
            "python", "-m", "serving.smoke", "--base-url", f"http://127.0.0.1:{stack.port}",
            "--api-key", key, "--requests", "/app/data/requests.jsonl" if ROOTFS else str(stack.state / "requests.jsonl"),
            "--anomalies",
        ],
    )  # fmt: skip
    assert "smoke test passed" in smoke and "anomalies: 2 with |score| >= 5" in smoke, smoke
    assert stack.procs["stream-worker"].poll() is None, stack.log("stream-worker")


def test_stream_worker_scores_page_views_through_the_broker(stack, purchase_world):
    from serving.stream.producer import publish
    from tests.integration.test_stream_rabbitmq import _drain
    from tests.pipeline.test_purchase_propensity import _lines

    if "stream-worker" not in stack.procs:
        pytest.skip("needs the stack started by the test before")
    env = stack.env("stream-worker")
    lines = _lines(purchase_world, 10)
    asyncio.run(publish(env["AMQP_URL"], env["STREAM_EVENTS_QUEUE"], lines, rate=0))
    got = asyncio.run(
        _drain(env["AMQP_URL"], env["STREAM_PREDICTIONS_QUEUE"], lambda m: len(m) >= len(lines) // 2, 60)
    )
    assert got, f"no prediction from the worker:\n{stack.log('stream-worker')}"
    body = json.loads(got[0].body)
    assert 0 <= body["probability"] <= 1, body
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as r:
        assert b"stream" in r.read()
