#!/bin/sh
# The daemon service (docker/compose.yaml): restored_db's concurrency pool gets its limit of one
# before the run queue's first pass (busflow_verify/defs/jobs.py hold_restore_pool), then
# dagster-daemon runs the schedule, the sensors and the run queue.
set -eu
python -c 'import dagster as dg
from busflow_verify.defs.jobs import hold_restore_pool
with dg.DagsterInstance.get() as instance:
    hold_restore_pool(instance)'
exec dagster-daemon run -w /opt/dagster/workspace.yaml
