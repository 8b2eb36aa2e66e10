"""`manage.py runserver`: the gateway for development, the same ASGI application start_server's workers run.

Django's own runserver serves WSGI; the gateway has one application, ASGI (serving.app). This runs it
under uvicorn in one process, restarted when code changes (uvicorn's reloader), with the static files
found in the apps (no collectstatic needed) when DEBUG is on.
"""

from __future__ import annotations

import re
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

_ADDRPORT = re.compile(r"^(?:(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]+):)?(?P<port>\d+)$")


def parse_addrport(text: str) -> tuple[str, int]:
    """Django's forms: `8000`, `0.0.0.0:8000`, `[::1]:8000`, `localhost:8000`."""
    match = _ADDRPORT.match(text)
    if match is None:
        raise CommandError(f'"{text}" is not a valid port number or address:port pair.')
    host = (match["host"] or "127.0.0.1").strip("[]")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise CommandError(f"{port} is not a port number (1-65535).")
    return host, port


class Command(BaseCommand):
    help = ("Serve the gateway for development: the ASGI application start_server runs, under uvicorn in one "
            "process, reloaded when the code changes. Production: start_server.")
    requires_system_checks: list[str] = []  # checked in handle(), once, as Django's runserver does

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000",
                            help="Port or address:port to serve (default: 127.0.0.1:8000)")
        parser.add_argument("--noreload", action="store_false", dest="use_reloader",
                            help="Do not restart when the code changes.")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = parse_addrport(options["addrport"])
        self.check(display_num_errors=True)
        self.check_migrations()
        self.stdout.write(f"Serving the gateway (ASGI, uvicorn) at http://{host}:{port}/ "
                          f"({'reloading on code changes' if options['use_reloader'] else 'no reload'}); "
                          "quit with CONTROL-C.")
        if not settings.DEBUG:
            self.stdout.write("Note: DEBUG is off, so static files (the admin's styles) are served only if "
                              "collected into STATIC_ROOT (`manage.py collectstatic`).")
        uvicorn.run("gateway_project.asgi:application", host=host, port=port, reload=options["use_reloader"],
                    reload_dirs=[str(settings.BASE_DIR)], loop="uvloop", ws="none", lifespan="on",
                    log_level="info")
