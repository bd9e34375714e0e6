"""API keys (serving/auth): every route but /healthz and /readyz needs one; scopes, expiry, rotation,
revocation, rate limits, CORS, hashing at rest, the request log's key id and the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth import KeyStore
from serving.auth.__main__ import main as cli
from tests.conftest import user_ids

pytestmark = pytest.mark.slow

# every route that needs a key, with a body that would otherwise be valid enough to reach the handler
ROUTES = [
    ("GET", "/v1/models", None, "score"),
    ("GET", "/v1/models/game_ltv", None, "score"),
    ("POST", "/v1/models/game_ltv/predict", {"entities": {"user_id": [1]}}, "score"),
    ("POST", "/v1/models/game_ltv/batch", {"entities": {"user_id": [1]}}, "batch"),
    ("GET", "/v1/batch/0123456789abcdef", None, "batch"),
    ("GET", "/v1/batch/0123456789abcdef/results", None, "batch"),
    ("GET", "/v1/anomalies", None, "anomalies"),
    ("GET", "/v1/models/game_ltv/monitoring", None, "monitor"),
    ("GET", "/metrics", None, "monitor"),
]


@pytest.fixture(scope="module")
def env(materialized, tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    settings = materialized.settings.model_copy(
        update={
            "request_log_url": f"sqlite:///{root / 'log.db'}",
            "request_log_spool_dir": root / "spool",
            "api_key_cache_s": 0.0,  # every request sees revocations at once
            "cors_origins": ["https://app.example"],
        }
    )
    store = KeyStore.from_settings(settings)
    with TestClient(create_app(settings)) as client:
        yield settings, store, client, root / "log.db"
    store.close()


def call(client, method, path, body=None, token=None, header="Authorization"):
    headers = {}
    if token is not None:
        headers = {"Authorization": f"Bearer {token}"} if header == "Authorization" else {"X-API-Key": token}
    return client.request(method, path, json=body, headers=headers)


def test_health_and_readiness_need_no_key(env):
    _, _, client, _ = env
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(("method", "path", "body", "action"), ROUTES)
def test_no_key_or_a_bad_one_is_401_with_a_sentence(env, method, path, body, action):
    _, store, client, _ = env
    r = call(client, method, path, body)
    assert r.status_code == 401 and "API key is required" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = call(client, method, path, body, token="not-a-key")
    assert r.status_code == 401 and "malformed" in r.json()["detail"]
    _, token = store.create("x", ["admin"])
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = call(client, method, path, body, token=forged)
    assert r.status_code == 401 and "unknown API key" in r.json()["detail"]
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("method", "path", "body", "action"), ROUTES)
def test_out_of_scope_is_403_and_in_scope_passes(env, method, path, body, action):
    _, store, client, _ = env
    others = [a for a in ("score", "batch", "anomalies", "monitor") if a != action]
    _, wrong_action = store.create("wrong-action", others)
    r = call(client, method, path, body, token=wrong_action)
    if path not in ("/v1/models", "/v1/models/game_ltv"):  # metadata: any key scoped to the model
        assert r.status_code == 403, r.text
        assert "may not" in r.json()["detail"] or "not scoped" in r.json()["detail"]
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    _, wrong_model = store.create("wrong-model", [action], ["churn"])
    r = call(client, method, path, body, token=wrong_model)
    if path == "/v1/models":
        assert r.status_code == 200 and r.json() == []  # it sees no model of this service
    elif path == "/metrics":
        assert r.status_code == 200  # the process's metrics: not per model (docs/security.md)
    elif path.startswith("/v1/batch/"):
        assert r.status_code == 404  # no such job: nothing to leak
    else:
        assert r.status_code == 403 and "not scoped to model" in r.json()["detail"], r.text
    _, right = store.create("right", [action], ["game_ltv", "api_anomaly"])
    r = call(client, method, path, body, token=right, header="X-API-Key")
    assert r.status_code not in (401, 403, 429), r.text


def test_keys_are_stored_hashed_and_named_in_the_request_log(env, materialized):
    _, store, client, db = env
    key, token = store.create("web", ["score"], ["game_ltv"], timedelta(days=1))
    secret = token.split("_", 2)[2]
    ids = user_ids(materialized, 3)
    assert (
        call(client, "POST", "/v1/models/game_ltv/predict", {"entities": {"user_id": ids}}, token).status_code
        == 200
    )
    client.app.state.request_log.flush()
    con = sqlite3.connect(db)
    cols = [c[1] for c in con.execute("PRAGMA table_info(api_key)")]
    (row,) = con.execute("SELECT * FROM api_key WHERE key_id = ?", (key.key_id,)).fetchall()
    stored = dict(zip(cols, row, strict=True))
    assert stored["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    dump = "\n".join(str(r) for r in con.execute("SELECT * FROM api_key")) + "\n".join(
        str(r) for r in con.execute("SELECT * FROM prediction_log")
    )
    assert secret not in dump and token not in dump
    logged = con.execute("SELECT key_id FROM prediction_log ORDER BY id DESC LIMIT 3").fetchall()
    assert logged == [(key.key_id,)] * 3


def test_expiry_revocation_and_rotation_with_grace(env):
    _, store, client, _ = env
    path, body = "/v1/models/game_ltv/predict", {"entities": {"user_id": [1]}}
    _, short = store.create("short", ["score"], expires_in=timedelta(seconds=1))
    assert call(client, "POST", path, body, short).status_code == 200
    time.sleep(1.1)
    r = call(client, "POST", path, body, short)
    assert r.status_code == 401 and "expired" in r.json()["detail"]

    key, token = store.create("mobile", ["score"], ["game_ltv"], timedelta(days=30))
    new, new_token = store.rotate(key.key_id, grace=timedelta(seconds=1))
    assert new.rotated_from == key.key_id and new.actions == key.actions and new.models == key.models
    assert new.expires_at - new.created_at == pytest.approx(timedelta(days=30), abs=timedelta(seconds=1))
    assert call(client, "POST", path, body, token).status_code == 200  # within the grace
    assert call(client, "POST", path, body, new_token).status_code == 200
    time.sleep(1.1)
    r = call(client, "POST", path, body, token)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    store.revoke(new.key_id)
    assert call(client, "POST", path, body, new_token).status_code == 401


def test_rate_limit_is_429_with_retry_after(env):
    _, store, client, _ = env
    _, token = store.create("slow", ["score"], rate_limit="5/minute")
    codes = [call(client, "GET", "/v1/models/game_ltv", token=token).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    r = call(client, "GET", "/v1/models/game_ltv", token=token)
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and "rate limit" in r.json()["detail"]
    _, other = store.create("other", ["score"], rate_limit="5/minute")  # limits are per key
    assert call(client, "GET", "/v1/models/game_ltv", token=other).status_code == 200


def test_cors_for_configured_origins_only(env):
    _, _, client, _ = env
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = client.options("/v1/models/game_ltv/predict", headers={"Origin": "https://app.example", **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    bad = client.options("/v1/models/game_ltv/predict", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in bad.headers


def test_openapi_documents_the_key_schemes_and_errors(env):
    _, _, client, _ = env
    doc = client.get("/openapi.json").json()
    assert {"APIKeyHeader", "HTTPBearer"} <= set(doc["components"]["securitySchemes"])
    op = doc["paths"]["/v1/models/game_ltv/predict"]["post"]  # one operation per loaded model
    assert {"401", "403", "429"} <= set(op["responses"]) and op["security"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    # the document says which operations need a key exactly as the server enforces it: without a key, an
    # operation listing `security` answers 401, and one that does not never does
    fill = {"name": "game_ltv", "job_id": "0123456789abcdef"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            url = path.format(**{k: fill.get(k, "x") for k in re.findall(r"{(\w+)}", path)})
            r = client.request(method.upper(), url, json={} if method == "post" else None)
            assert (r.status_code == 401) == bool(op.get("security")), (method, path, r.status_code)


def test_cli_creates_lists_rotates_and_revokes(env, monkeypatch, capsys):
    settings, store, _, _ = env
    monkeypatch.setenv("REQUEST_LOG_URL", settings.request_log_url)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    assert (
        cli(["create", "--name", "bank-web", "--actions", "score,batch", "--models", "payment_option"]) == 0
    )
    made = json.loads(capsys.readouterr().out)
    assert made["token"].startswith(f"fpk_{made['key_id']}_") and made["models"] == ["payment_option"]
    assert cli(["list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert made["key_id"] in {k["key_id"] for k in listed} and all("token" not in k for k in listed)
    assert cli(["rotate", made["key_id"]]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["rotated_from"] == made["key_id"]
    assert store.get(made["key_id"]).state() == "revoked"
    assert cli(["revoke", rotated["key_id"]]) == 0 and store.get(rotated["key_id"]).state() == "revoked"
    capsys.readouterr()
    assert cli(["create", "--name", "x", "--actions", "fly"]) == 2
    assert "actions must be some of" in capsys.readouterr().err
    assert cli(["demo-key"]) == 0
    demo = capsys.readouterr().out.strip()
    assert cli(["demo-key"]) == 0 and capsys.readouterr().out.strip() == demo  # kept, not re-created
    assert (settings.data_dir / "demo_api_key").stat().st_mode & 0o777 == 0o600


def test_a_key_is_presented_once_and_whole(env):
    """An empty header, a non-Bearer Authorization or two different keys are refused, never skipped for the
    other header's key."""
    _, store, client, _ = env
    _, token = store.create("two-headers", ("score",), ("*",))
    _, other = store.create("other", ("score",), ("*",))
    for headers, says in (
        ({"X-API-Key": "", "Authorization": f"Bearer {token}"}, "present but empty"),
        ({"Authorization": f"Basic {token}"}, "must be 'Bearer <key>'"),
        ({"X-API-Key": other, "Authorization": f"Bearer {token}"}, "two different API keys"),
    ):
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 401 and says in r.json()["detail"], r.text
        assert 'error="invalid_request"' in r.headers["www-authenticate"]
    both = client.get("/v1/models", headers={"X-API-Key": token, "Authorization": f"Bearer {token}"})
    assert both.status_code == 200  # the same key twice is one key
