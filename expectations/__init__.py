"""The data contracts: one folder per dataset with its ``dataset.json`` and GX ``suite.json``.

A package only so that the folder ships inside the wheel and is found with
``importlib.resources`` once installed (``pipeline.config.dataset.default_expectations_dir``); there is
no code here.
"""
