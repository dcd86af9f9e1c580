"""The per-batch alert report (Jinja2 templates in ``templates/``)."""
