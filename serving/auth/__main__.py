"""Manage API keys: ``python -m serving.auth create|list|rotate|revoke|demo-key`` (docs/security.md).

The database is the request log's (DATABASE_URL / REQUEST_LOG_URL, else SQLite under data/). A key's
token is printed once, by ``create`` and ``rotate``; only its SHA-256 digest is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta

from core.settings import Settings
from serving.auth.keys import ACTIONS, ALL_MODELS, KeyProblem, KeyStore

DEMO_NAME = "demo"
DEMO_ACTIONS = ("score", "batch", "anomalies", "monitor")


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def demo_key(settings: Settings, store: KeyStore) -> str:
    """The demo key's token, kept in ``data/demo_api_key`` (mode 0600) and reused while it is active;
    otherwise a new one (every action but admin, all models, 30 days)."""
    path = settings.data_dir / "demo_api_key"
    if path.exists():
        token = path.read_text().strip()
        key = store.get(token.split("_")[1]) if token.count("_") >= 2 else None
        if key is not None and key.state() == "active" and key.matches(token.split("_", 2)[2]):
            return token
    _, token = store.create(DEMO_NAME, DEMO_ACTIONS, (ALL_MODELS,), timedelta(days=30))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.auth", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="a new key; prints its token once")
    c.add_argument("--name", required=True, help="the client it is for, e.g. web, mobile, bank-dashboard")
    c.add_argument("--actions", required=True, help=f"comma-separated, of {', '.join(ACTIONS)}")
    c.add_argument("--models", default=ALL_MODELS, help="comma-separated model names, or * (default)")
    c.add_argument("--expires-in-days", type=float, default=None, help="lifetime (default: no expiry)")
    c.add_argument(
        "--rate-limit", default=None, help="e.g. 20/second (default: the service's API_RATE_LIMIT)"
    )
    ls = sub.add_parser("list", help="keys without their secrets")
    ls.add_argument("--all", action="store_true", help="also expired and revoked keys")
    r = sub.add_parser(
        "rotate", help="a new key with the same scope; the old one stops after --grace-minutes"
    )
    r.add_argument("key_id")
    r.add_argument("--grace-minutes", type=float, default=0.0)
    v = sub.add_parser("revoke", help="stop a key now")
    v.add_argument("key_id")
    sub.add_parser("demo-key", help="print the demo key (created once, kept in data/demo_api_key)")
    args = ap.parse_args(argv)

    settings = Settings()
    store = KeyStore.from_settings(settings)
    try:
        if args.cmd == "create":
            days = args.expires_in_days
            key, token = store.create(
                args.name,
                _csv(args.actions),
                _csv(args.models),
                timedelta(days=days) if days else None,
                args.rate_limit,
            )
            print(json.dumps(key.public() | {"token": token}, indent=2))
            print("the token is shown only now: store it in the client's secret store", file=sys.stderr)
        elif args.cmd == "list":
            for k in store.list(include_inactive=args.all):
                print(json.dumps(k.public()))
        elif args.cmd == "rotate":
            key, token = store.rotate(args.key_id, timedelta(minutes=args.grace_minutes))
            print(json.dumps(key.public() | {"token": token}, indent=2))
            print(f"{args.key_id} stops working in {args.grace_minutes:g} min", file=sys.stderr)
        elif args.cmd == "revoke":
            print(json.dumps(store.revoke(args.key_id).public()))
        elif args.cmd == "demo-key":
            print(demo_key(settings, store))
    except KeyProblem as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
