from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError

from endpoints_app.validation import ConfigError
from serving.prepare import exec_supervisor, prepare
from serving.supervisor import ServeOptions


class Command(BaseCommand):
    help = ("Serve the gateway in production: prepare the database, apply the config file, then run uvicorn "
            "workers under a supervisor that watches the file (MLflow's `mlflow gateway start` flags and defaults).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config-path", default=os.environ.get("MLFLOW_GATEWAY_CONFIG") or None,
                            help="The YAML config file to apply and watch (default: $MLFLOW_GATEWAY_CONFIG). "
                                 "Without it, the endpoints already in the database are served.")
        parser.add_argument("--host", default="127.0.0.1", help="The address to bind (default: 127.0.0.1)")
        parser.add_argument("--port", type=int, default=5000, help="The port to bind (default: 5000)")
        parser.add_argument("--workers", type=int, default=2, help="Worker processes (default: 2)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be 1 or more.", returncode=2)
        serve_options = ServeOptions(host=options["host"], port=options["port"], workers=options["workers"],
                                     config_path=options["config_path"])
        try:
            digest = prepare(serve_options, report=self.report)
        except ConfigError as exc:
            raise CommandError(f"The gateway configuration is invalid, nothing is served:\n{exc}",
                               returncode=2) from None
        except OperationalError as exc:
            raise CommandError(f"The database cannot be used (check DATABASE_URL): {exc}") from None
        exec_supervisor(serve_options, digest)  # the workers, the file watcher and the stop, without Django

    def report(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()  # a log file or a pipe should see each line as it happens
