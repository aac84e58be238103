"""isa_cli: the thin typer layer of the `isa` command; all work happens in isa_core."""
