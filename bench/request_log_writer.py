"""Request-log writer throughput on PostgreSQL: `log()` N records from one thread, then `flush()`.

    DATABASE_URL=postgresql+psycopg://... python -m bench.request_log_writer [--records 100000]

Prints the time per `log()` (building the record included: the request path's share) and the rows per
second until everything is committed, in a fresh schema dropped afterwards. To compare two versions of the
writer, run it from a worktree of each, alternating (docs/benchmarks.md, "Request log").
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from serving.request_log import PredictionRecord, RequestLogWriter, migrate


def main() -> None:  # pragma: no cover - a bench
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    url = os.environ["DATABASE_URL"]
    schema = f"bench_reqlog_{secrets.token_hex(4)}"
    migrate(url, schema)
    engine = create_engine(url)
    try:
        with tempfile.TemporaryDirectory() as spool:
            w = RequestLogWriter(url, schema, Path(spool), batch_size=args.batch_size)
            w.start()
            start = time.perf_counter()
            for i in range(args.records):
                w.log(
                    PredictionRecord(
                        f"req-{i}", "bench", "v1", {"user_id": i}, {}, {"a": i / 3, "b": i % 7}, i / 1e4, 1.0
                    )
                )
            logged = time.perf_counter() - start
            if not w.flush(timeout_s=600):
                raise SystemExit("flush did not reach the database")
            total = time.perf_counter() - start
            w.close()
        with engine.connect() as conn:
            rows = conn.execute(text(f'SELECT count(*) FROM "{schema}".prediction_log')).scalar_one()
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    print(
        f"{rows} rows; log() {logged / args.records * 1e6:.1f} us per record (record built included); "
        f"all committed in {total:.2f} s = {rows / total:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
