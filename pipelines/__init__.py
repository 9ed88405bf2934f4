"""Command-line entry points and the synthetic district generator."""
