"""``python -m adapters.population``: the ``exchange registry`` commands, run directly.

Example: ``python -m adapters.population serve --db registry.db --port 0``.
"""

from exchange.cli.registry import group

group(prog_name="python -m adapters.population")
