# One image, two targets (docs/deployment.md):
#   runtime    the API (default command), the stream worker, the batch job, the request-log migrations and
#              the materialization job: requirements/serving.txt only (no training, tuning or test tools)
#   pipelines  runtime's code and packages plus the pipelines, DVC, MLflow's server and the Dagster scheduler
#              (`dvc repro`, `python -m pipelines.lifecycle ...`), and PySpark with a Java runtime (SPARK_MASTER:
#              training sets and materialization on Spark, docs/scaling.md)
# Build: `docker build --target runtime -t featureplat:runtime .` (podman/buildah the same). BASE is any
# Debian-based image with CPython 3.11 and its venv module; the default is the official slim one.
# Run as a non-root user with a read-only root file system: everything written goes under /app/data
# (DATA_DIR: registry file, SQLite fallbacks, batch jobs, downloaded model bundles, the log spool) and /tmp.
ARG BASE=python:3.11-slim-bookworm

# --- builder: the virtualenvs. Every pinned package is a binary wheel (--only-binary), so no compiler is
# needed; a package that needed one would fail here rather than pull a toolchain into the runtime.
FROM ${BASE} AS builder
# PIP_INDEX_URL / PIP_CERT: a package index mirror and the CA of a TLS-intercepting proxy, when the build
# needs them (passed with --build-arg; unset by default)
ARG PIP_INDEX_URL PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements/serving.txt /tmp/requirements/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --only-binary=:all: -r /tmp/requirements/serving.txt \
 && /opt/venv/bin/pip uninstall --yes pip \
 && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} +

FROM ${BASE} AS builder-pipelines
ARG PIP_INDEX_URL PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements/pipelines.txt /tmp/requirements/
# antlr4-python3-runtime (DVC's Hydra -> OmegaConf) is published as source only: pure Python, no compiler
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --only-binary=:all: --no-binary=antlr4-python3-runtime \
      -r /tmp/requirements/pipelines.txt \
 && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} +

# --- os: what both targets share: the base, CatBoost's OpenMP runtime, the non-root user, no apt caches
FROM ${BASE} AS os
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && useradd --uid 10001 --create-home --home-dir /home/app app \
 && mkdir -p /app/data /app/models && chown app:app /app/data
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATA_DIR=/app/data MODELS_DIR=/app/models
WORKDIR /app

# --- runtime: the serving environment and the code it imports (tests/unit/test_requirements.py checks
# that the closure of the entry points' imports is copied, and nothing of the pipelines beyond it)
FROM os AS runtime
COPY --from=builder /opt/venv /opt/venv
COPY core core
COPY domain domain
COPY serving serving
COPY feature_repo feature_repo
COPY specs specs
COPY pipelines/__init__.py pipelines/materialize.py pipelines/
COPY pipelines/common/__init__.py pipelines/common/offline_tables.py pipelines/common/
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000"]

# --- pipelines: the whole pipeline environment and code. DVC runs without git here (core.no_scm): mount
# a checkout at /app to run `dvc repro` with its history, or use the lifecycle commands as they are.
FROM os AS pipelines
# Java for PySpark's driver: SPARK_MASTER runs training sets and materialization on Spark (docs/scaling.md)
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=builder-pipelines /opt/venv /opt/venv
COPY core core
COPY domain domain
COPY serving serving
COPY feature_repo feature_repo
COPY specs specs
COPY pipelines pipelines
COPY synthetic synthetic
COPY examples examples
COPY dvc.yaml dvc.lock params.yaml ./
COPY .dvc/config .dvc/config
RUN printf '[core]\n    no_scm = true\n' > .dvc/config.local && chown -R app:app .dvc
USER 10001
CMD ["python", "-m", "pipelines.lifecycle", "status"]
