"""Model file for MLflow's models-from-code logging (see ``pipeline.serving``)."""

import mlflow.models

from pipeline.serving import SentinelPyfunc

mlflow.models.set_model(SentinelPyfunc())
