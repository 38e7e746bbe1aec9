"""The deployed topology, run for real (`make test-deploy`): a Docker engine of the harness's own,
the debootstrap base, the wheelhouse, both images built from docker/, and docker/compose.yaml
brought up with docker/compose.host-network.yaml. `python -m busflow_verify_tests.deployed`
does the same steps by hand (see its --help)."""
