"""The model's lifecycle around the registry: review decisions, registration cadence, batch alerts.

- ``review``: the one function that promotes, rejects or rolls back a version (the CLI, the
  gate and the DAG's approval step all call it, so they record the same tags);
- ``evidence``: the version tags and the registered model's description a reviewer reads in
  the MLflow UI;
- ``cadence``: whether a routine fine-tune is due (``lifecycle.register_every``);
- ``batch_alerts``: a batch that is itself unusual (mostly duplicates, far from the champion).
"""
