# The image every Airflow component and the MLflow server run (docker-compose.yml).
# Installed from the same lock file as development: constraints.txt pins every package.
# Not built on the development machine (no Docker engine there); see docs/deploy.md.
FROM python:3.11.14-slim-bookworm

# The library is installed non-editable; the data contracts it reads are the reviewed copy in
# /opt/sentinel/expectations (mount over it to change them without a rebuild), named explicitly.
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow SENTINEL_HOME=/opt/sentinel/var \
    SENTINEL_EXPECTATIONS_DIR=/opt/sentinel/expectations
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 50000 sentinel
WORKDIR /opt/sentinel
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY benchmarks ./benchmarks
COPY dags ./dags
COPY expectations ./expectations
RUN pip install -c constraints.txt ".[deploy]" \
 && mkdir -p /opt/airflow /opt/sentinel/var \
 && chown -R sentinel /opt/airflow /opt/sentinel
USER sentinel
