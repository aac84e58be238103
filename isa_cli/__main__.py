"""`python -m isa_cli` runs the `isa` command."""

from isa_cli.main import main

main()
