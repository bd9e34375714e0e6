"""Run the feast CLI on the effective configuration (environment overrides applied).

    python -m core.feast_cli apply
    python -m core.feast_cli materialize-incremental 2026-11-01T00:00:00

A plain `feast -c feature_repo ...` reads feature_repo/feature_store.yaml as it is (embedded stores);
this wrapper writes the effective YAML (Redis / PostgreSQL when configured) to a temporary file and
passes it with `-f`, so both spellings run the same Feast code.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from core.feature_store import raw_config
from core.settings import Settings, activated


def main(argv: list[str] | None = None) -> None:
    from feast.cli.cli import cli

    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        fs_yaml = Path(tmp) / "feature_store.yaml"
        fs_yaml.write_text(yaml.safe_dump(raw_config(settings)))
        args = [
            "-c",
            str(settings.feature_repo),
            "-f",
            str(fs_yaml),
            *(sys.argv[1:] if argv is None else argv),
        ]
        with activated(settings):
            cli.main(args=args, prog_name="feast", standalone_mode=True)


if __name__ == "__main__":
    main()
