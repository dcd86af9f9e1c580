"""Kept for model versions registered before the restructure: the model file MLflow logged with
them (models from code) imports ``SentinelPyfunc`` from here. New versions log
``pipeline/lifecycle/serving_model.py``, which imports ``pipeline.lifecycle.serving``."""

from pipeline.lifecycle.serving import SentinelPyfunc

__all__ = ["SentinelPyfunc"]
