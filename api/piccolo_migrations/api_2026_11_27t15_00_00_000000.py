"""api 0002: forget the idempotency entries stored with an unkeyed body digest.

Until now ``idempotency_keys.body_digest`` held SHA-256 of the request body: whoever
held a copy of the database could confirm guesses of a body offline (a national id in a
consumer's fixed consent-request template is a search of ~10^10 values). Digests are
keyed from now on (:func:`vault.crypto.request_digest`), and the old ones cannot be
rekeyed without their bodies, so the entries go. They are a 24-hour replay cache: a
client that repeats a request from before the upgrade has it processed again, which
for a record answers 200 with the unchanged version and for a consent request the
existing pending consent.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-27T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "idempotency digests keyed"

STATEMENTS = ["DELETE FROM idempotency_keys"]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="api",
        description=DESCRIPTION,
        sqlite=STATEMENTS,
        postgres=STATEMENTS,
    )
