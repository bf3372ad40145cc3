"""``python -m adapters.payments init|serve``: see :mod:`adapters.payments.cli`."""

from adapters.payments.cli import main

main(prog_name="python -m adapters.payments")
