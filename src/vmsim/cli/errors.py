"""Errors a subcommand raises to end the command; main() maps each class to an exit code."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user should read about (printed to stderr as ``vmsim: <message>``)."""


class UsageError(CliError):
    """The options make no sense for this command (exit status 2, like argparse)."""


class ModelDeviation(CliError):
    """The model did something the spec says Linux does not (exit status 1)."""


__all__ = ["CliError", "ModelDeviation", "UsageError"]
