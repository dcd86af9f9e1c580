"""The review page inside Airflow's UI (Airflow 3.1+ plugin interface).

``fastapi_apps`` mounts the review app on Airflow's API server under ``/sentinel-review``, and
``external_views`` puts it in the UI's navigation (an iframe of that path), so an analyst signs
in once with Airflow's own authentication. Airflow does not authenticate a plugin's FastAPI
app (a Starlette mount inherits none of the core API's dependencies), so every request of the
mounted app resolves the signed-in user itself, with Airflow's ``get_user`` (the JWT from the
``Authorization: Bearer`` header or the UI's session cookie, through the configured auth
manager): no user, no page (401), and the user's name is the reviewer that is stored.

Airflow loads it from the ``airflow.plugins`` entry point (pyproject.toml), or from a plugins
folder file that imports ``SentinelReviewPlugin``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import HTTPException, Request

from pipeline.feedback.web import create_app

URL_PREFIX = "/sentinel-review"


async def airflow_reviewer(request: Request) -> str:
    """The signed-in Airflow user's name; 401/403 (Airflow's own errors) without one."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    user = await get_user(request, None, await bearer_scheme(request))
    name = user.get_name() if user else ""
    if not name:
        raise HTTPException(401, "Not authenticated")
    return str(name)


class SentinelReviewPlugin(AirflowPlugin):
    name = "latent_sentinel_review"
    fastapi_apps = [  # noqa: RUF012 - Airflow's plugin interface is class attributes
        {"app": create_app(reviewer=airflow_reviewer), "url_prefix": URL_PREFIX, "name": "Latent Sentinel review"}
    ]
    external_views = [  # noqa: RUF012
        {"name": "Alert review", "href": URL_PREFIX.lstrip("/") + "/", "destination": "nav",
         "url_route": "sentinel-review", "category": "browse"}
    ]
