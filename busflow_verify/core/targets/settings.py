"""Which restore target this deployment uses, read from the environment it is given
(BUSFLOW_RESTORE_TARGET and the target's own variables; docs/deploying.md: Restore targets).

- `ephemeral` (the default): a DisposablePostgres started for the run on this machine
  (targets/ephemeral.py).
- `server`: a scratch database on a restore server the team keeps (targets/server.py).
- `docker`: the restore image started for the run through the Docker SDK (targets/docker.py).

The values come in as a mapping (the Dagster layer passes its environment); nothing here reads
os.environ.
"""

from __future__ import annotations

from collections.abc import Mapping

from busflow_verify.core.config import ConfigError

TARGET_ENV = "BUSFLOW_RESTORE_TARGET"
KINDS = ("ephemeral", "docker", "server")
SERVER_ENV = {  # the restore server's connection; the password is a secret
    "host": "BUSFLOW_RESTORE_SERVER_HOST",
    "port": "BUSFLOW_RESTORE_SERVER_PORT",
    "user": "BUSFLOW_RESTORE_SERVER_USER",
    "password": "BUSFLOW_RESTORE_SERVER_PASSWORD",
    "dbname": "BUSFLOW_RESTORE_SERVER_DB",
}
DOCKER_ENV = {
    "image": "BUSFLOW_RESTORE_IMAGE",
    "network": "BUSFLOW_RESTORE_DOCKER_NETWORK",
    "ready_timeout": "BUSFLOW_RESTORE_READY_TIMEOUT",
}


def target_kind(env: Mapping[str, str]) -> str:
    """The configured kind, checked: a bad value or a missing server variable is a ConfigError
    naming the variable (the CLI's exit 2, before anything is launched)."""
    kind = env.get(TARGET_ENV) or "ephemeral"
    if kind not in KINDS:
        raise ConfigError(f"{TARGET_ENV}={kind!r} is not one of {', '.join(KINDS)}")
    if kind == "server":
        missing = [SERVER_ENV[k] for k in ("host", "user") if not env.get(SERVER_ENV[k])]
        if missing:
            raise ConfigError(
                f"{TARGET_ENV}=server needs {' and '.join(missing)} "
                "(the restore server's host and restore role)"
            )
        env_number(SERVER_ENV["port"], 5432, int, env)
    if kind == "docker":
        env_number(DOCKER_ENV["ready_timeout"], 120.0, float, env)
    return kind


def env_number(name: str, default, cast, env: Mapping[str, str]):
    """A numeric variable, or its default when unset; a non-number is a ConfigError naming it."""
    text = env.get(name)
    try:
        return cast(text) if text else default
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def restore_host(env: Mapping[str, str]) -> str:
    """What the verify runs of this deployment restore on, for the one-run-per-restore-host
    concurrency limit (the `busflow/restore_host` tag)."""
    kind = target_kind(env)
    if kind == "server":
        return f"server:{env[SERVER_ENV['host']]}:{env.get(SERVER_ENV['port']) or 5432}"
    if kind == "docker":
        return f"docker:{env.get('DOCKER_HOST') or 'local'}"
    return "ephemeral:local"
