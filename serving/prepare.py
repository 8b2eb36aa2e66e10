"""Production serving: the Django half of `start_server`.

It prepares the database (migrations), applies the config file like `load_config --prune`, reports
what it serves, then replaces itself (exec) with the Django-free supervisor
(serving.supervisor), which runs uvicorn, watches the file and stops the whole tree.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from endpoints_app.models import Endpoint
from endpoints_app.services import config_version, exclusive_config_lock, import_config
from endpoints_app.validation import ConfigError, Issue
from serving.configread import ConfigFileError
from serving.supervisor import ServeOptions, file_digest


def prepare_database() -> bool:
    """Apply pending migrations (one instance at a time). Returns whether there were any."""
    with exclusive_config_lock():
        executor = MigrationExecutor(connection)
        if not executor.migration_plan(executor.loader.graph.leaf_nodes()):
            return False
        call_command("migrate", interactive=False, verbosity=0)
        return True


def prepare(options: ServeOptions, report: Callable[[str], None]) -> str | None:
    """Everything before serving. Returns the digest of the applied file (None without one).

    Raises ConfigError if the config file is missing or invalid (nothing is served then)."""
    if options.config_path and not os.path.exists(options.config_path):  # before the database is touched
        raise ConfigError([Issue("", "", f"{options.config_path} does not exist")], options.config_path)
    if prepare_database():
        report("Database migrated.")
    # The admin's and the API docs' assets, served from STATIC_ROOT by ServeStatic (gateway_project.asgi).
    call_command("collectstatic", interactive=False, verbosity=0)
    digest = None
    if options.config_path:
        try:
            digest = file_digest(options.config_path, settings.GATEWAY_CONFIG_MAX_BYTES)
        except ConfigFileError as exc:
            raise ConfigError([Issue("", "", str(exc))], options.config_path) from None
        result = import_config(options.config_path, prune=True)
        report(f"Loaded {os.path.abspath(options.config_path)}: {len(result.created)} created, "
               f"{len(result.updated)} updated, {len(result.unchanged)} unchanged, {len(result.deleted)} deleted")
        for warning in result.warnings:
            report(f"warning: {warning}")
    base_url = f"http://{_display_host(options.host)}:{options.port}"
    count = Endpoint.objects.filter(enabled=True).count()
    report(f"Config version {config_version()}, {count} enabled endpoint(s).")
    admin_hint = "" if _has_operator() else " (no operator account yet: run `python manage.py ensure_admin`)"
    report(f"Admin: {base_url}/admin/{admin_hint}   API docs: {base_url}/docs")
    if options.host not in _LOOPBACK and settings.GATEWAY_AUTH == "off":
        report(f"Warning: GATEWAY_AUTH is off and the gateway listens on {options.host}: anyone who can reach it "
               "can call every endpoint with the provider keys it holds. Set GATEWAY_AUTH=keys and give each "
               "consumer its keys (`manage.py create_key`), or keep it on a loopback address behind a proxy "
               "that authenticates.")
    if options.host not in _LOOPBACK and "*" not in settings.ALLOWED_HOSTS:
        report(f"Note: only Host names in ALLOWED_HOSTS are answered ({', '.join(settings.ALLOWED_HOSTS)}); "
               "set ALLOWED_HOSTS to the names clients use.")
    if settings.GATEWAY_CONFIG_POLL_SECONDS <= 0:
        report("Warning: GATEWAY_CONFIG_POLL_SECONDS is 0, so workers will not see config changes made "
               "elsewhere (file, admin, load_config) until they restart.")
    return digest


def exec_supervisor(options: ServeOptions, applied_digest: str | None) -> None:
    """Become the supervisor (same pid, so signals and the terminal keep working). Does not return."""
    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "serving.supervisor", "--host", options.host, "--port", str(options.port),
            "--workers", str(options.workers), "--static-root", str(settings.STATIC_ROOT)]
    if options.config_path:
        argv += ["--config-path", os.path.abspath(options.config_path), "--applied-digest", applied_digest or "",
                 "--config-max-bytes", str(settings.GATEWAY_CONFIG_MAX_BYTES)]
    os.chdir(settings.BASE_DIR)
    os.execv(sys.executable, argv)


def _has_operator() -> bool:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(is_superuser=True).exists()


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
