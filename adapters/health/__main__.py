"""``python -m adapters.health generate|serve``: see :mod:`adapters.health.cli`."""

from adapters.health.cli import main

main(prog_name="python -m adapters.health")
