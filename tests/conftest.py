import os
import warnings

import pytest
import torch

# two cores: keep torch from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        yield
