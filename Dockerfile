# Lean image of the scoring API: core, the models' declarations (domain), serving, the feature repo and the
# specs; no pipeline stage and no generator (tests/unit/test_tabular_dvcgen.py holds the import rule).
# Models and feature data come from the pipeline (`dvc repro`), mounted or baked in at build time; the online store and request log are services (see docker-compose.yml).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY core core
COPY domain domain
COPY serving serving
COPY feature_repo feature_repo
COPY specs specs
RUN useradd --create-home app && mkdir -p data models && chown -R app data models
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "8000"]
