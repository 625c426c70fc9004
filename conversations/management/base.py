"""What every support command (chat_*) shares: it refuses, at once and creating nothing, to run
against a database that is not the site's.

A command typed in a new terminal without the site's settings (DATABASE_URL) reaches another
database: on SQLite, connecting would create an empty db.sqlite3, and the command would end in
a traceback ("no such table"). So the database is looked at before the command connects: an
SQLite file that does not exist is not opened, and a database without the site's tables is
named as such, each with one line that says what to do.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from conversations.models import Conversation

NO_TABLES = "the database has no tables: run migrate, or point DATABASE_URL at the site's database"


def require_tables(alias: str = "default") -> None:
    """CommandError unless the database holds the site's tables; on SQLite, without creating a file."""
    connection = connections[alias]
    where = _where(connection.settings_dict)
    if connection.vendor == "sqlite" and not _in_memory(connection.settings_dict["NAME"]):
        if not Path(connection.settings_dict["NAME"]).exists():
            raise CommandError(f"{NO_TABLES} (no file {where})")
    try:
        tables = connection.introspection.table_names()
    except DatabaseError as error:
        raise CommandError(f"cannot reach the database ({where}): {str(error).strip()}") from None
    if Conversation._meta.db_table not in tables:
        raise CommandError(f"{NO_TABLES} ({where})")


def _in_memory(name) -> bool:
    return str(name) == ":memory:" or str(name).startswith("file:")


def _where(database: dict) -> str:
    """The database, named without its password."""
    if "sqlite" in database["ENGINE"]:
        return f"SQLite {database['NAME']}"
    host = database.get("HOST") or "localhost"
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"{database['NAME']} on {host}{port}"


class SupportCommand(BaseCommand):
    def execute(self, *args, **options):
        require_tables(options.get("database") or "default")
        return super().execute(*args, **options)
