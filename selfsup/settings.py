"""Defaults that the ``selfsup`` command and its LightningCLI share: a leaf module, so that neither
imports the other for them."""

from __future__ import annotations

RUN_ROOT = "runs"
"""The folder under which runs (logs, checkpoints, ``config.yaml``) go unless a config says otherwise."""

PROGRESS_REFRESH_STEPS = 10
"""Training steps between two refreshes of the terminal progress bar."""
