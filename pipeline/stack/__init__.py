"""The multi-machine stack as real processes on one host, under a process supervisor.

``make stack`` (``python -m pipeline.stack up``) starts, under supervisord, the processes that
``docker-compose.yml`` runs as services: a private PostgreSQL cluster (Airflow's, MLflow's and
the feedback store's databases), Redis (the Celery broker), an MLflow tracking server on
PostgreSQL with proxied artifact storage, Airflow's API server, scheduler, DAG processor and
triggerer with the CeleryExecutor, and ``SENTINEL_WORKERS`` Celery workers. Its data lives under
``SENTINEL_STACK_DIR`` (``var/stack/``); its secrets are generated into ``.env`` on first start.

- ``layout``: where everything lives, the ports, the secrets file.
- ``services``: the programs and the supervisor's configuration.
- ``control``: up, down, status (the CLI in ``__main__``).
"""
