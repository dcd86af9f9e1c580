"""Configuration, declared once: environment variables, ``dataset.json``, and the docs generated from them."""
