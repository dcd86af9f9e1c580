"""``make demo``: generated purchases with labelled anomalies, and the week the demo runs."""
