"""FSDP on two CPU processes (gloo): MAE trains with the weight decay of the unsharded model, the
reconstruction callback runs, and the checkpoint resumes and exports an encoder plain timm loads.

Lightning's FSDPStrategy refuses CPUs (FSDP's wrapper needs a device id); the script below wraps on
the CPU explicitly, for this test only."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from tests.helpers import REPO, run_in_plain_timm

SCRIPT = textwrap.dedent("""
    import json, sys
    import lightning as L
    import torch
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.strategies.fsdp import _setup_activation_checkpointing
    from timm.models.vision_transformer import Block

    from selfsup import MAE, ImageDataModule
    from selfsup.checkpoint import AtomicCheckpointIO
    from selfsup.eval import ReconstructionGrid
    from selfsup.optim import canonical_name, decayed_names

    class CPUFSDP(FSDPStrategy):
        def _setup_model(self, model):
            from torch.distributed.fsdp import FullyShardedDataParallel

            model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config, sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"), **self.kwargs)
            _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
            return model

    out = sys.argv[1]

    def mae():
        L.seed_everything(0)
        return MAE("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 2},
                   decoder_dim=32, decoder_depth=1, decoder_heads=2)

    class StartStep(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step

    def fit(steps, resume=None):
        # a fresh module and strategy each time; the second fit resumes in the same two processes
        model, start = mae(), StartStep()
        trainer = L.Trainer(accelerator="cpu", devices=2, max_steps=steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
            strategy=CPUFSDP(sharding_strategy="FULL_SHARD", auto_wrap_policy={Block}, state_dict_type="full"),
            plugins=[AtomicCheckpointIO()], callbacks=[ReconstructionGrid(every_n_epochs=1, num_images=2), start])
        data = ImageDataModule(image_size=16, batch_size=8, num_workers=0, train_subset=32, val_subset=8)
        trainer.fit(model, data, ckpt_path=resume)
        return model, trainer, start.step

    model, trainer, _ = fit(4)
    optimizer = trainer.optimizers[0]
    names = {id(p): canonical_name(n) for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for g in optimizer.param_groups if g["decay"] for p in g["params"])
    shapes = sorted({tuple(p.shape) for p in model.parameters()})
    trainer.save_checkpoint(f"{out}/fsdp.ckpt")
    _, resumed, resumed_from = fit(6, resume=f"{out}/fsdp.ckpt")
    if trainer.is_global_zero:
        fresh = mae()
        expected = sorted(decayed_names(fresh, fresh.no_weight_decay_names()))
        json.dump({"decayed": decayed, "expected": expected, "shapes": [list(s) for s in shapes],
                   "step": trainer.global_step, "resumed_from": resumed_from,
                   "resumed_step": resumed.global_step}, open(f"{out}/result.json", "w"))
""")


def run(tmp_path):
    script = tmp_path / "fsdp_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


def test_fsdp_trains_with_the_right_weight_decay_resumes_and_exports(tmp_path):
    """4 steps, a checkpoint, then a fresh Trainer resumes from it to step 6, in the same 2 ranks."""
    first = run(tmp_path)
    # FULL_SHARD made every parameter a flat 1-D shard, yet the decayed set is the unsharded model's
    assert all(len(shape) <= 1 for shape in first["shapes"])
    assert first["decayed"] == first["expected"] and len(first["expected"]) > 10
    assert list((tmp_path / "lightning_logs").rglob("reconstructions/*.png")) or list(
        tmp_path.rglob("reconstructions/*.png")
    )
    checkpoint = torch.load(tmp_path / "fsdp.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint["selfsup"]["backbone_prefix"] == "encoder."
    assert first["step"] == 4 and first["resumed_from"] == 4 and first["resumed_step"] == 6
    from selfsup.export import export

    out = export(tmp_path / "fsdp.ckpt", tmp_path / "export")
    features, printed = run_in_plain_timm(out, torch.randn(2, 3, 16, 16), tmp_path)
    assert "VisionTransformer avg (2, 192)" in printed and torch.isfinite(features).all()
