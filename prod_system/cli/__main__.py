"""``python -m prod_system.cli``: the same as the ``prod-system`` command."""

from prod_system.cli import main

main()
