"""Model file for MLflow's models-from-code logging (see ``pipeline.lifecycle.serving``)."""

import mlflow.models

from pipeline.lifecycle.serving import SentinelPyfunc

mlflow.models.set_model(SentinelPyfunc())
