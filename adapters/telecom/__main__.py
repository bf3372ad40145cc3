"""``python -m adapters.telecom init|serve``: see :mod:`adapters.telecom.cli`."""

from adapters.telecom.cli import main

main(prog_name="python -m adapters.telecom")
