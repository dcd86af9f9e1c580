# Image for the multi-machine path (docker-compose.yml). Untested here: no Docker engine.
FROM python:3.11-slim
WORKDIR /opt/sentinel
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY benchmarks ./benchmarks
COPY dags ./dags
COPY expectations ./expectations
RUN pip install --no-cache-dir -c constraints.txt . "psycopg2-binary" "boto3" "apache-airflow-providers-celery"
ENV SENTINEL_HOME=/opt/sentinel/var
