"""Loggers that never lose a run: CSV is the default (no account, no network); this module adds a
Weights & Biases logger that falls back to offline mode instead of failing or hanging."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

WANDB_HOST = "api.wandb.ai"


def wandb_reachable(timeout: float) -> bool:
    """Whether W&B's API answers a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((WANDB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_credentials() -> bool:
    """Whether an API key is configured (``WANDB_API_KEY`` or ``~/.netrc``, where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline whenever online logging cannot work.

    Offline when ``offline`` is true, when ``WANDB_MODE`` is ``offline`` or ``disabled``, when no API
    key is configured, or when ``api.wandb.ai`` does not answer within ``connect_timeout`` seconds.
    An offline run is written under ``<save_dir>/wandb/offline-run-*`` and uploaded later with
    ``wandb sync <that folder>``: nothing is lost, and training never waits on the network.

    Args:
        project, name, entity, tags: the W&B run.
        save_dir: where the run's files go (``runs`` like the other loggers).
        offline: force offline (True) or online (False); None decides as above.
        connect_timeout: seconds to wait for W&B's API when deciding.
        log_model: upload checkpoints as artifacts (online only).
    """

    def __init__(
        self,
        project: str = "selfsup",
        name: str | None = None,
        save_dir: str = "runs",
        entity: str | None = None,
        tags: list[str] | None = None,
        offline: bool | None = None,
        connect_timeout: float = 3.0,
        log_model: bool = False,
    ) -> None:
        mode = os.environ.get("WANDB_MODE", "").lower()
        reason = None
        if offline is None:
            if mode in ("offline", "disabled", "dryrun"):
                reason = f"WANDB_MODE={mode}"
            elif not wandb_credentials():
                reason = "no W&B API key (run `wandb login` or set WANDB_API_KEY)"
            elif not wandb_reachable(connect_timeout):
                reason = f"{WANDB_HOST} unreachable within {connect_timeout:g} s"
            offline = reason is not None
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            project=project,
            name=name,
            save_dir=save_dir,
            entity=entity,
            tags=tags,
            offline=offline,
            log_model=log_model and not offline,
        )
        if offline:
            rank_zero_info(
                f"W&B runs offline ({reason or 'offline=True'}): the run is kept under "
                f"{Path(save_dir) / 'wandb'}; upload it later with `wandb sync <run folder>`."
            )
