"""Experiments behind the CLI commands: each builds its run from a config and writes its results."""
