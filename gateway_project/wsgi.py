"""WSGI entry point (granian, gunicorn or any WSGI server).

Invocation POSTs take the fast path (serving.app); everything else is plain Django.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

django_application = get_wsgi_application()

from serving.app import InvocationFastPath  # noqa: E402  (needs Django set up first)

application = InvocationFastPath(django_application)
