"""Databricks Model Serving (`provider: databricks`): OpenAI-compatible serving endpoints.

The model name is the serving endpoint's name, sent as `model` to `{host}/serving-endpoints`
(Unity Catalog names with two or more dots go to `{host}/ai-gateway/mlflow/v1`, as MLflow does).
Databricks serving endpoints offer chat, completions (both streaming) and embeddings.

Auth is a personal access token (`token`), or OAuth machine-to-machine with a service principal's
`client_id` and `client_secret`: the gateway exchanges them at `{host}/oidc/v1/token` for a
short-lived access token and caches it until shortly before it expires. MLflow leaves these to the
databricks-sdk credential chain; without that SDK one of the two must be configured.
"""
from __future__ import annotations

import base64
import threading
import time
from typing import Any
from urllib.parse import urlencode

from providers.config import ConfigField, ConfigValidationError, ProviderConfig
from providers.errors import GatewayError, UpstreamBadResponse
from providers.openai_compatible import OpenAICompatibleProvider
from serving.upstream import UpstreamRequest

#: Refresh an OAuth token this many seconds before Databricks says it expires.
TOKEN_REFRESH_MARGIN = 60.0


class DatabricksConfig(ProviderConfig):
    fields = (
        ConfigField("host", required=True, kind="url", help="Workspace URL, e.g. https://dbc-123.cloud.databricks.com"),
        ConfigField("token", kind="secret", help="Personal access token"),
        ConfigField("client_id", help="Service principal's OAuth client id (with client_secret)"),
        ConfigField("client_secret", kind="secret", help="Service principal's OAuth secret"),
    )

    @classmethod
    def check(cls, stored: dict[str, Any]) -> None:
        if "token" in stored:
            return
        if "client_id" in stored and "client_secret" in stored:
            return
        missing = "client_secret" if "client_id" in stored else "token"
        raise ConfigValidationError(
            missing, "Databricks needs either 'token', or both 'client_id' and 'client_secret' (OAuth M2M)"
        )


class _TokenCache:
    """OAuth access tokens per (host, client_id), shared by every endpoint in the process."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key: tuple[str, str], token: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(0.0, expires_in - TOKEN_REFRESH_MARGIN))

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


oauth_tokens = _TokenCache()


class DatabricksProvider(OpenAICompatibleProvider):
    name = "databricks"
    aliases = ("databricks-model-serving",)
    display_name = "Databricks"
    config_class = DatabricksConfig

    def base_url(self, config: dict[str, Any]) -> str:
        host = str(config["host"]).rstrip("/")
        if (self.model_name or "").count(".") >= 2:
            return f"{host}/ai-gateway/mlflow/v1"
        return f"{host}/serving-endpoints"

    def headers(self, config: dict[str, Any]) -> dict[str, str]:
        token = config.get("token") or self.oauth_token(config)
        return {"Authorization": f"Bearer {token}"}

    def call_secrets(self) -> list[str]:
        """The config's secrets, the Basic credentials and the OAuth token made of them (if cached)."""
        found = super().call_secrets()
        try:
            config = self.config
        except GatewayError:
            return found
        if config.get("client_id") and config.get("client_secret"):
            found.append(base64.b64encode(f"{config['client_id']}:{config['client_secret']}".encode()).decode())
            token = oauth_tokens.get((str(config.get("host") or "").rstrip("/"), str(config["client_id"])))
            if token is not None:
                found.append(token)
        return found

    def oauth_token(self, config: dict[str, Any]) -> str:
        host = str(config["host"]).rstrip("/")
        key = (host, str(config["client_id"]))
        cached = oauth_tokens.get(key)
        if cached is not None:
            return cached
        basic = base64.b64encode(f"{config['client_id']}:{config['client_secret']}".encode()).decode()
        body = self.post_json(UpstreamRequest(
            url=f"{host}/oidc/v1/token",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode({"grant_type": "client_credentials", "scope": "all-apis"}).encode(),
        ))
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise UpstreamBadResponse("The Databricks OAuth token response has no access_token.")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        oauth_tokens.put(key, body["access_token"], lifetime)
        return str(body["access_token"])
