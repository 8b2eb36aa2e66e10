"""How operators authenticate to the management API: their Django staff session, or an operator token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from consumers.services import operator_for_token
from serving.auth import bearer_token


class OperatorTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer gwo_...`, a token made with `manage.py create_operator_token` (stored hashed)."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            return None
        user = operator_for_token(token)
        if user is None:
            raise exceptions.AuthenticationFailed("The operator token is not valid (unknown, expired or revoked), "
                                                  "or its user is no longer an active staff member.")
        return user, None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="gateway-management"'


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    target_class = "consumers.authentication.OperatorTokenAuthentication"
    name = "operatorToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "An operator token (gwo_...)."}


class IsOperator(permissions.BasePermission):
    """An active staff user (the admin's own rule)."""

    message = "Operators only: log in to the admin as a staff user, or send an operator token."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user is not None and user.is_active and user.is_staff)


class ManagementAPIMixin:
    """What every management API view shares: operator authentication and permission."""

    authentication_classes: Sequence[type[authentication.BaseAuthentication]] = (
        OperatorTokenAuthentication, authentication.SessionAuthentication)
    permission_classes: Sequence[type[permissions.BasePermission]] = (IsOperator,)
