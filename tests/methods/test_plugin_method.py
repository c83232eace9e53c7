"""A method is one file: a BYOL-like EMA method written here, in the tests, against the public base
class only, trains, exports its momentum teacher (which plain timm loads) and is probed, with no
change anywhere else in selfsup."""

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import ViewConfig
from selfsup.methods.base import PretrainModule


# --- the plug-in method: everything between here and the tests is the method ---------------------
class BYOL(PretrainModule):
    """Grill et al. 2020: an online encoder + projector + predictor regresses a momentum target's
    projection of the other view."""

    method = "byol_test"
    pooling = "token"

    def __init__(
        self, encoder: str = "vit_tiny_patch16_224", *, dim: int = 32, momentum: float = 0.99, **kwargs: Any
    ):
        super().__init__(encoder, **kwargs)
        self.save_init_args(locals())
        width = self.encoder.num_features

        def mlp(d_in: int) -> nn.Module:
            return nn.Sequential(nn.Linear(d_in, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, dim))

        self.projector, self.predictor = mlp(width), mlp(dim)
        self.add_momentum_teacher("encoder", "target_encoder", momentum)
        self.add_momentum_teacher("projector", "target_projector", momentum)
        self.set_views([ViewConfig(blur_prob=0.0), ViewConfig(blur_prob=0.0, solarize_prob=0.2)])

    @property
    def backbone(self) -> nn.Module:
        return self.target_encoder

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        (v1, v2), _ = batch
        online = self.predictor(self.projector(self.encoder(torch.cat([v1, v2]))))
        with torch.no_grad():
            target = self.target_projector(self.target_encoder(torch.cat([v2, v1])))
        loss = self.guard(2 - 2 * F.cosine_similarity(online, target, dim=-1).mean(), [v1, v2])
        self.log_step(loss, len(v1))
        return loss


# --- end of the method ----------------------------------------------------------------------------


def test_a_one_file_ema_method_trains_exports_its_teacher_and_is_probed(tmp_path):
    from selfsup import ImageDataModule
    from selfsup.checkpoint import AtomicCheckpointIO
    from selfsup.eval.probe import probe
    from selfsup.export import export
    from tests.helpers import run_in_plain_timm

    L.seed_everything(0)
    model = BYOL(img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    start = {k: v.clone() for k, v in model.target_encoder.state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(
        model, ImageDataModule(image_size=16, batch_size=32, num_workers=0, train_subset=128, val_subset=64)
    )
    checkpoint = tmp_path / "byol.ckpt"
    trainer.save_checkpoint(checkpoint)
    # the teacher moved (by EMA: it gets no gradients) and is what export writes
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert any(not torch.equal(start[k], v) for k, v in model.target_encoder.state_dict().items())
    meta = torch.load(checkpoint, weights_only=True)["selfsup"]
    assert meta["method"] == "byol_test" and meta["backbone_prefix"] == "target_encoder."
    out = export(checkpoint, tmp_path / "export")
    x = torch.randn(4, 3, 16, 16)
    features, _ = run_in_plain_timm(out, x, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(features, model.eval().features(x), rtol=0, atol=1e-5)
    (result,) = probe([checkpoint], out=tmp_path / "probe", cache_dir=tmp_path / "cache", probe_epochs=5)
    assert result.method == "byol_test" and 0.0 <= result.knn_top1[20] <= 1.0
