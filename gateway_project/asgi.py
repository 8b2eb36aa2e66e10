"""ASGI entry point (what `manage.py start_server` runs under granian).

Invocation POSTs and /health take the async fast path (endpoints_app.fastpath); everything else is
Django's ASGI handler.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

django_application = get_asgi_application()

from endpoints_app.fastpath import AsyncInvocationFastPath  # noqa: E402  (needs Django set up first)

application = AsyncInvocationFastPath(django_application)
