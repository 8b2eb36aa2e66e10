"""The last good endpoint table's rows, on disk, for a worker that starts while the database is away.

Every successful rebuild of the table (serving.runtime) writes the rows it was built from to
GATEWAY_TABLE_SNAPSHOT (start_server's supervisor points its workers at a file in its private runtime
directory; empty: no snapshot). A worker that cannot reach the database when it first needs its table
builds it from that file instead, and serves; the poller replaces it once the database answers.

What is written is what the database gives: secrets are still `$env` / `$file` references or
Fernet-encrypted values, resolved again when the table is built, never in clear. The file is written
atomically (a temporary file renamed over it), readable by its owner only, and signed with a key derived
from SECRET_KEY: a file that is not ours, or was altered, is refused before it is unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import tempfile
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from serving.runtime import TableRows

logger = logging.getLogger(__name__)

_MAGIC = b"gateway-table-snapshot-1\n"


def _key() -> bytes:
    return hashlib.sha256(b"gateway-table-snapshot:" + settings.SECRET_KEY.encode()).digest()


def path() -> str:
    return str(settings.GATEWAY_TABLE_SNAPSHOT or "")


def save(rows: TableRows) -> None:
    """Write the rows (never raises: a snapshot that cannot be written is logged, the table still serves)."""
    target = path()
    if not target:
        return
    try:
        data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        signature = hmac.new(_key(), data, hashlib.sha256).digest()
        directory = os.path.dirname(os.path.abspath(target))
        fd, temporary = tempfile.mkstemp(prefix=".table-", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_MAGIC + signature + data)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    except Exception as exc:  # a full disk, a read-only folder
        logger.warning("the endpoint table snapshot %s could not be written: %s", target, exc)


def load() -> TableRows | None:
    """The rows last saved, or None (no file, not ours, altered, unreadable: logged)."""
    target = path()
    if not target:
        return None
    try:
        with open(target, "rb") as source:
            if os.fstat(source.fileno()).st_uid != os.getuid():
                logger.warning("the endpoint table snapshot %s is not owned by this user: ignored", target)
                return None
            content = source.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("the endpoint table snapshot %s cannot be read: %s", target, exc)
        return None
    signature, data = content[len(_MAGIC):len(_MAGIC) + 32], content[len(_MAGIC) + 32:]
    if not content.startswith(_MAGIC) or not hmac.compare_digest(
            signature, hmac.new(_key(), data, hashlib.sha256).digest()):
        logger.warning("the endpoint table snapshot %s is not signed with this gateway's key: ignored", target)
        return None
    try:
        rows: TableRows = pickle.loads(data)  # signed by us: see above
    except Exception as exc:  # written by another version of the code
        logger.warning("the endpoint table snapshot %s cannot be used: %s", target, exc)
        return None
    return rows
