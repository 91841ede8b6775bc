"""shiftbench's engine: core types, registry, run store and command line."""

__version__ = "0.1.0"
