"""Where the monitor (pipelines/lifecycle/monitor.py) leaves its verdicts and reports, for the readers
that must not import it (the API's /metrics and dashboard read the latest verdict per model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def monitoring_dir(settings: Any, name: str) -> Path:
    """``data/monitoring/<model>/``: ``<stamp>.json`` verdicts, ``<stamp>.html`` / ``_backtest.html`` reports."""
    return settings.data_dir / "monitoring" / name


def latest_verdict(settings: Any, name: str) -> Path | None:
    files = sorted(monitoring_dir(settings, name).glob("*.json"))
    return files[-1] if files else None


def read_latest_verdict(settings: Any, name: str) -> dict[str, Any] | None:
    """The newest verdict of ``name`` as a dict (None: never monitored, or the file is being written)."""
    path = latest_verdict(settings, name)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
