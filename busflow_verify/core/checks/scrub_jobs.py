"""F1 step 3's evidence: the pg_cron jobs a restored dump carries. The re-run of pg_dump must
land before the next scrub cycle, i.e. the next run of a scrub job among these
(core/checks/cron_schedule.py computes it, core/checks/size_guard.py `scrub_deadline` says it)."""

from __future__ import annotations

from typing import Any

import psycopg

from busflow_verify.core.postgres.cluster import ConnInfo

_CRON_JOBS = """
SELECT jobname, schedule, database, active, left(command, 200) AS command
FROM cron.job ORDER BY jobid
"""


def restored_cron_jobs(owner: ConnInfo) -> list[dict[str, Any]]:
    """The pg_cron jobs a restored dump carries (name, schedule, database, active): F1 step 3's
    deadline is the next run of a scrub job. Empty without pg_cron."""
    with psycopg.connect(**owner.kwargs(), connect_timeout=10) as conn:
        if not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')"
        ).fetchone()[0]:
            return []
        cursor = conn.execute(_CRON_JOBS)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
