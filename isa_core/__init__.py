"""isa_core: the library behind the `isa` command line (no CLI code here)."""

__version__ = "0.1.0"
