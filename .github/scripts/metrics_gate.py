#!/usr/bin/env python3
"""The model gate of .github/workflows/ci-cd.yml: fail a pull request whose guarded metrics got worse.

    dvc metrics diff main --json --all > diff.json
    python .github/scripts/metrics_gate.py --config .github/metrics-gate.yaml --diff diff.json \\
        [--summary "$GITHUB_STEP_SUMMARY"] [--dvc-status status.json]

The diff is DVC's: ``{metrics file: {key: {"old": main's value, "new": this branch's, "diff": ...}}}``, nested
keys joined by dots (``cv.model_roc_auc_mean``). ``--all`` matters: without it DVC leaves out the metrics that
did not change, and an unchanged guarded metric would look missing.

A guard (an entry of the config's ``guards:``) names a metrics file, a key, the better direction (``higher``
or ``lower``) and a tolerance, absolute and in the metric's own units. It fails when the metric moved the
wrong way by more than the tolerance, when this branch does not have it (renamed, removed, file gone), or
when a value is not a finite number. A metric that main does not have yet passes: nothing to compare.

``--dvc-status`` (the output of ``dvc status --json``) adds, for information only, the stages whose code or
params changed since dvc.lock: what would rerun because of this branch, leaving out the data CI does not have.

Prints a Markdown report (appended to ``--summary`` too). Exit status: 0 every guard passed, 1 a guard failed,
2 the config or the diff cannot be used. Standard library and PyYAML only: runs without the project installed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DIRECTIONS = ("higher", "lower")
# float noise: a change of exactly the tolerance (0.83 -> 0.82 with 0.01) must pass
EPSILON = 1e-9


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Guard:
    file: str
    key: str
    direction: str  # "higher" or "lower" is better
    tolerance: float

    @property
    def name(self) -> str:
        return f"{self.file}:{self.key}"


@dataclass(frozen=True)
class Verdict:
    guard: Guard
    status: str  # "ok", "new" (no baseline on main), "regressed", "missing", "invalid"
    message: str
    old: float | None = None
    new: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in {"regressed", "missing", "invalid"}


def load_guards(config: Any) -> list[Guard]:
    """The guards of a parsed config file; ConfigError says which entry is wrong and why."""
    if not isinstance(config, dict) or not isinstance(config.get("guards"), list) or not config["guards"]:
        raise ConfigError("the config needs a non-empty list `guards:`")
    guards, seen = [], set()
    for i, entry in enumerate(config["guards"]):
        where = f"guards[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with file, key, direction, tolerance")
        unknown = set(entry) - {"file", "key", "direction", "tolerance", "why"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        for field in ("file", "key"):
            if not isinstance(entry.get(field), str) or not entry[field].strip():
                raise ConfigError(f"{where}: `{field}` must be a non-empty string")
        if entry.get("direction") not in DIRECTIONS:
            raise ConfigError(
                f"{where}: `direction` must be one of {DIRECTIONS}, not {entry.get('direction')!r}"
            )
        tolerance = entry.get("tolerance")
        if not _is_number(tolerance) or tolerance < 0:
            raise ConfigError(f"{where}: `tolerance` must be a number >= 0, not {tolerance!r}")
        guard = Guard(entry["file"], entry["key"], entry["direction"], float(tolerance))
        if guard.name in seen:
            raise ConfigError(f"{where}: {guard.name} is guarded twice")
        seen.add(guard.name)
        guards.append(guard)
    return guards


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def judge(guard: Guard, diff: dict[str, Any]) -> Verdict:
    """One guard against `dvc metrics diff --json --all` output."""
    entries = diff.get(guard.file)
    if not isinstance(entries, dict):
        return Verdict(
            guard,
            "missing",
            f"{guard.file} is not in the metrics diff: neither main nor this branch has a metrics file of "
            "that path (see the `metrics:` of dvc.yaml and specs/dvc.yaml)",
        )
    entry = entries.get(guard.key)
    if not isinstance(entry, dict):
        return Verdict(
            guard,
            "missing",
            f"{guard.name}: no key {guard.key!r} in main or in this branch (renamed? then update "
            f".github/metrics-gate.yaml; was the diff made without --all? then unchanged metrics are left out)",
        )
    old, new = entry.get("old"), entry.get("new")
    if new is None:
        return Verdict(guard, "missing", f"{guard.name}: this branch no longer has it (main: {old})", old)
    if not _is_number(new):
        return Verdict(guard, "invalid", f"{guard.name}: this branch's value {new!r} is not a finite number")
    if old is None:
        return Verdict(guard, "new", f"{guard.name}: new metric ({new}), nothing on main to compare", new=new)
    if not _is_number(old):
        return Verdict(
            guard, "invalid", f"{guard.name}: main's value {old!r} is not a finite number", new=new
        )
    change = new - old
    worse_by = -change if guard.direction == "higher" else change
    if worse_by > guard.tolerance + EPSILON:
        return Verdict(
            guard,
            "regressed",
            f"{guard.name}: {old} -> {new} ({change:+.6g}); {guard.direction} is better and at most "
            f"{guard.tolerance:g} worse is allowed",
            old,
            new,
        )
    return Verdict(guard, "ok", f"{guard.name}: {old} -> {new} ({change:+.6g})", old, new)


def judge_all(guards: list[Guard], diff: Any) -> list[Verdict]:
    if not isinstance(diff, dict):
        raise ConfigError(f"the metrics diff must be a JSON object, got {type(diff).__name__}")
    return [judge(g, diff) for g in guards]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


ICONS = {
    "ok": "pass",
    "new": "pass (new)",
    "regressed": "**FAIL**",
    "missing": "**FAIL**",
    "invalid": "**FAIL**",
}


def report(verdicts: list[Verdict]) -> str:
    failed = [v for v in verdicts if v.failed]
    lines = [
        "## Model gate: guarded metrics against main",
        "",
        f"{len(verdicts) - len(failed)} of {len(verdicts)} guards passed"
        + (": this pull request makes a guarded metric worse or loses it." if failed else "."),
        "",
        "| metric | better | main | this branch | change | tolerance | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        g = v.guard
        change = "-" if v.old is None or v.new is None else f"{v.new - v.old:+.6g}"
        lines.append(
            f"| `{g.file}` `{g.key}` | {g.direction} | {_fmt(v.old)} | {_fmt(v.new)} | {change} "
            f"| {g.tolerance:g} | {ICONS[v.status]} |"
        )
    if failed:
        lines += ["", *[f"- {v.message}" for v in failed]]
    return "\n".join(lines) + "\n"


def stale_stages(status: Any) -> dict[str, list[str]]:
    """From `dvc status --json`: each stage whose command, code or params changed since dvc.lock, with what.

    Deleted dependencies and outputs not in the cache are left out: CI checks out the code, not the data.
    """
    out: dict[str, list[str]] = {}
    if not isinstance(status, dict):
        return out
    for stage, items in status.items():
        reasons: list[str] = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, str):
                reasons.append(item)
            elif isinstance(item, dict):
                for path, state in (item.get("changed deps") or {}).items():
                    if isinstance(state, dict):  # a params file: {param: "modified"}
                        reasons += [f"param {path}:{p} {s}" for p, s in state.items()]
                    elif state in {"modified", "new"}:
                        reasons.append(f"{path} {state}")
        if reasons:
            out[stage] = reasons
    return out


def stale_report(status: Any) -> str:
    stale = stale_stages(status)
    lines = ["## Pipeline stages this branch makes stale (`dvc status`, code and params only)", ""]
    if not stale:
        lines.append("None: dvc.lock matches this branch's code and params.")
    else:
        lines.append(
            f"{len(stale)} stage(s) would rerun; metrics committed without rerunning them do not reflect "
            "this branch (`make repro`, then commit dvc.lock and metrics/):"
        )
        lines.append("")
        lines += [f"- `{stage}`: {', '.join(reasons)}" for stage, reasons in stale.items()]
    return "\n".join(lines) + "\n"


def _read_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text) if text.strip() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path, help="the guards (.github/metrics-gate.yaml)")
    ap.add_argument("--diff", required=True, help="`dvc metrics diff --json --all main` output (- for stdin)")
    ap.add_argument("--summary", type=Path, help="also append the report here ($GITHUB_STEP_SUMMARY)")
    ap.add_argument("--dvc-status", help="`dvc status --json` output: adds the stale stages (information)")
    args = ap.parse_args(argv)
    try:
        guards = load_guards(yaml.safe_load(args.config.read_text()))
        verdicts = judge_all(guards, _read_json(args.diff))
        text = report(verdicts)
        if args.dvc_status:
            text += "\n" + stale_report(_read_json(args.dvc_status))
    except (OSError, ValueError, yaml.YAMLError) as e:  # ConfigError and JSONDecodeError are ValueErrors
        print(f"metrics gate: cannot run: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.summary:
        with args.summary.open("a") as f:
            f.write(text + "\n")
    failed = [v for v in verdicts if v.failed]
    for v in failed:
        print(f"::error title=model gate::{v.message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
