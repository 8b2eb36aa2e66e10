from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = ("Make sure an operator account exists for the admin. The first time, creates one with a random "
            "password and prints it once; there is no shared default password.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:5000/admin/")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"Admin: {options['url']} (log in with your operator account; reset a password with "
                              "`python manage.py changepassword USER`)")
            return
        if user_model.objects.filter(**{user_model.USERNAME_FIELD: options["username"]}).exists():
            raise CommandError(
                f"A user named {options['username']!r} exists but is not a superuser: pass --username with "
                "another name, or create an operator with `python manage.py createsuperuser`."
            )
        password = secrets.token_urlsafe(16)
        user_model.objects.create_superuser(options["username"], email="", password=password)
        self.stdout.write(self.style.SUCCESS(
            f"Admin: {options['url']}  user: {options['username']}  password: {password}\n"
            "This password is shown once; change it with `python manage.py changepassword "
            f"{options['username']}`."
        ))
