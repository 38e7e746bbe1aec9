"""`python -m busflow_verify.cli`: the `busflow-verify` command."""

from busflow_verify.cli import entry

entry()
