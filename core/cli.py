"""What every command-line entry point (DVC stages, jobs, the bench) shares."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines on stderr: the progress of long stages and their summaries."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
