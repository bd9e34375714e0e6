"""Shared pieces of the benchmark harness: the machine, versions, processes, wrk."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "data" / "bench"
WRK_SCRIPT = ROOT / "bench" / "wrk_predict.lua"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "os": platform.platform(),
        "calibration_ms": calibration_ms(),
    }


def calibration_ms(n: int = 2_000_000, repeats: int = 5) -> float:
    """The best of `repeats` timings of a fixed pure-Python loop (one core): runs on different machines
    (or on a busy one) compare by this figure; the latency figures of this process scale roughly with it."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        acc = 0
        for i in range(n):
            acc += i * i & 0xFF
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("feast", "catboost", "fastapi", "uvicorn", "redis", "pandas", "pyarrow", "dvc"):
        out[pkg] = version(pkg)
    for name, cmd in (
        ("redis-server", ["redis-server", "--version"]),
        ("postgresql", ["psql", "--version"]),
        ("wrk", ["wrk", "--version"]),
    ):
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            text = (text.stdout or text.stderr).strip().splitlines()[0]
            m = re.search(r"v=(\S+)|(\d+\.\d+(\.\d+)?)", text)
            out[name] = (m.group(1) or m.group(2)) if m else text
        except (OSError, IndexError, subprocess.SubprocessError):
            out[name] = None
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, method: str = "GET", body: bytes | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                url, data=body, method=method, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout} s: {last}")


class Server:
    """A server process started for one measurement, stopped (SIGTERM, then SIGKILL) afterwards."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.cmd, self.env, self.log_path = cmd, env, log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def wrk(
    url: str,
    ids_file: Path,
    mode: str,
    connections: int,
    seconds: int,
    batch: int = 1,
    delay_ms: float = 0.0,
    threads: int = 2,
) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (`apt-get install wrk`; make bench installs it)")
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(ids_file),
        mode,
        str(batch),
        f"{delay_ms:.3f}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON ") :])
    seconds_run = r["duration_us"] / 1e6
    r.update(
        connections=connections,
        batch=batch,
        delay_ms=round(delay_ms, 3),
        rps=round(r["requests"] / seconds_run, 1),
        **{
            k.replace("_us", "_ms"): round(r[k] / 1000, 3)
            for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")
        },
    )
    return r


def cpu_snapshot(pgid: int | None) -> tuple[float, float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat, all cores), and the CPU seconds
    used so far by the live processes of process group `pgid` (a server and its workers)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields) / tick
    busy = total - (fields[3] + fields[4]) / tick  # minus idle and iowait
    group = 0.0
    if pgid is not None:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2 :].split()
            if int(f[2]) == pgid:  # field 5: process group
                group += (int(f[11]) + int(f[12])) / tick  # utime + stime
    return busy, total, group


def with_cpu(run: Callable[[], dict], pgid: int | None) -> dict:
    """Run one measurement and add where the CPU went meanwhile: `machine_busy_share` (both cores, the
    load generator and the databases included) and `server_cpu_ms_per_request` (the server's processes)."""
    b0, t0, g0 = cpu_snapshot(pgid)
    r = run()
    b1, t1, g1 = cpu_snapshot(pgid)
    r["machine_busy_share"] = round((b1 - b0) / max(t1 - t0, 1e-9), 3)
    if pgid is not None and r.get("requests"):
        r["server_cpu_ms_per_request"] = round((g1 - g0) * 1000 / r["requests"], 3)
    return r


def python() -> str:
    return sys.executable


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux keeps that across execve, so a
    child started by a large parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
