"""The lifecycle's commands: ``python -m pipelines.lifecycle <command>``.

register [MODEL ...]     log every trained model (or the named ones) to MLflow, gate it, move aliases
status                   each registered model's champion, challenger and history
rollback MODEL           point `champion` back at the previous champion (the API follows)
monitor [MODEL ...]      drift and live quality of the served champions; --retrain acts on the verdict
retrain MODEL            fresh training set, challenger, gate, promotion
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from core import model_registry as mr
from core.cli import configure_logging
from core.registry import models
from core.settings import Settings
from pipelines.common.params import load_params
from pipelines.lifecycle import monitor as mon
from pipelines.lifecycle import registry as reg
from pipelines.lifecycle.params import LifecycleParams
from pipelines.lifecycle.retrain import retrain

log = logging.getLogger("pipelines.lifecycle")


def lifecycle_params(path: str = "params.yaml") -> LifecycleParams:
    p = load_params(path)
    return p.lifecycle if "lifecycle" in p.sections() else LifecycleParams()


def status(settings: Settings) -> list[dict]:
    out = []
    for name in mr.registered_names(settings) if mr.store_exists(settings) else []:
        row = {"model": name}
        for alias in (mr.CHAMPION, mr.CHALLENGER):
            mv = mr.version_by_alias(settings, name, alias)
            if mv is not None:
                row[alias] = {
                    "version": mv.version,
                    "run_id": mv.run_id,
                    "feature_service": (mv.tags or {}).get("feature_service"),
                    "gate_reason": (mv.tags or {}).get("gate_reason"),
                }
        row["history"] = mr.history(settings, name)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("register", help="log, register and gate the trained models")
    r.add_argument("models", nargs="*")
    sub.add_parser("status", help="champions, challengers, history")
    rb = sub.add_parser("rollback", help="the previous champion back")
    rb.add_argument("model")
    m = sub.add_parser("monitor", help="drift and live quality; --retrain starts retraining when needed")
    m.add_argument("models", nargs="*")
    m.add_argument("--retrain", action="store_true")
    rt = sub.add_parser("retrain", help="fresh training set, challenger, gate, promotion")
    rt.add_argument("model")
    args = ap.parse_args(argv)
    configure_logging()
    logging.getLogger("feast").setLevel(logging.WARNING)
    settings, lp = Settings(), lifecycle_params()
    try:
        if args.command == "register":
            for name in args.models or sorted(models(settings)):
                d = reg.register_and_gate(settings, name, lp)
                if d is not None:
                    print(f"{name}: {'promoted' if d.promote else 'not promoted'}: {d.reason}")
        elif args.command == "status":
            print(json.dumps(status(settings), indent=2))
        elif args.command == "rollback":
            frm, to = mr.rollback(settings, args.model)
            print(
                f"{args.model}: champion is version {to} again (was {frm}); the API follows at its next poll"
            )
        elif args.command == "monitor":
            for name in args.models or mr.registered_names(settings):
                res = mon.monitor(settings, name, lp.monitor)
                print(res.to_json())
                if args.retrain and res.retrain:
                    d = retrain(settings, name, lp)
                    print(f"{name}: retrained: {d.reason if d else 'no model'}")
        elif args.command == "retrain":
            d = retrain(settings, args.model, lp)
            print(f"{args.model}: {d.reason if d else 'no model'}")
    except ValueError as e:
        print(f"{args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
