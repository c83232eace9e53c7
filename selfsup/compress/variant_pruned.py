"""The ``pruned/`` artefact: magnitude pruning, an optional recovery fine-tune, and a plain timm export."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.compress.pruning import PruneMode, make_permanent, prune_encoder, shrink_mlp, zero_fraction
from selfsup.compress.recover import distill_recover
from selfsup.compress.source import EXPORT_FILES
from selfsup.compress.variant import BuildContext, Variant, write_readme

LOAD_PRUNED = """\
import timm
model = timm.create_model("local-dir:{dir}", pretrained=True).eval()
features = model(images)  # [B, 3, H, W] normalised with config.json's mean/std -> [B, D]"""


@dataclass(frozen=True)
class PruneOptions:
    """How to prune: the fraction ``amount`` in (0, 1), the ``mode``, and the recovery fine-tune."""

    amount: float
    mode: PruneMode
    finetune_steps: int
    finetune_lr: float


def build_pruned(context: BuildContext, options: PruneOptions) -> Variant:
    """Prune a copy of the source, recover it (``finetune_steps``), write ``pruned/`` and reload it."""
    import timm

    source, model = context.source, context.source.model
    mode, steps = options.mode, options.finetune_steps
    student = copy.deepcopy(model)
    result = prune_encoder(student, options.amount, mode)
    losses = []
    if steps:
        task = context.progress.add_task(f"pruned: recovery fine-tune ({mode})", total=steps)
        losses = distill_recover(
            student,
            model,
            context.datamodule.train_dataloader(),
            context.normalize.to(context.device),
            steps,
            lr=options.finetune_lr,
            device=context.device,
            on_step=lambda step, loss: context.progress.advance(task),
        )
        student.cpu()
        context.normalize.cpu()
        model.cpu()
    make_permanent(student)
    sparsity = zero_fraction(student, result.targets)
    all_params = list(student.parameters())
    model_sparsity = sum(int((p == 0).sum()) for p in all_params) / sum(p.numel() for p in all_params)
    final, mlp_ratio = student.eval(), None
    if mode == "mlp":

        def build(ratio: float) -> nn.Module:
            args = dict(source.config.get("model_args", {}), mlp_ratio=ratio)
            args["num_classes"] = source.config.get("num_classes", 0)
            built = timm.create_model(source.config["architecture"], pretrained=False, **args)
            built.pretrained_cfg = dict(model.pretrained_cfg)
            return built

        final, mlp_ratio = shrink_mlp(student, result.per_block, build)
    record = {
        "method": "prune",
        **result.as_dict(),
        "sparsity_of_targets": sparsity,
        "sparsity_of_all_parameters": model_sparsity,
        "parameters": sum(p.numel() for p in final.parameters()),
        "parameters_original": sum(p.numel() for p in model.parameters()),
        "physically_smaller": mode == "mlp",
        "mlp_ratio": mlp_ratio,
        "tool": f"torch.nn.utils.prune (torch {torch.__version__})",
        "finetune": {
            "steps": steps,
            "lr": options.finetune_lr,
            "objective": "MSE of output tokens to the unpruned original (masks kept)",
            "loss_first": float(losses[0]) if losses else None,
            "loss_last": float(losses[-1]) if losses else None,
        },
    }
    load = LOAD_PRUNED.format(dir="pruned")
    metadata = dict(source.metadata, compression=record, load=load, source_export=str(source.path.resolve()))
    from selfsup.export import write_export

    tag = f"{source.config.get('pretrained_cfg', {}).get('tag') or 'selfsup'}_pruned"
    folder = write_export(context.staging / "pruned", final, tag, source.mean, source.std, metadata)
    kept = (
        "the model is rebuilt with fewer MLP channels (mlp_ratio)"
        if mode == "mlp"
        else "pruned weights are stored as zeros (timm's ViT cannot express fewer heads per block)"
        if mode == "heads"
        else "pruned weights are stored as zeros; dense kernels do not run faster on them"
    )
    write_readme(
        folder,
        f"{mode} magnitude pruning ({options.amount}) of {source.path.name}: a plain timm export.",
        load,
        [
            f"Removed {result.removed} of {result.total} {record['unit']}; measured sparsity of the targeted "
            f"weights {sparsity:.4f}, of all parameters {model_sparsity:.4f}.",
            f"Recovery fine-tune: {steps} steps. {kept}.",
        ],
    )
    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    notes = f"{mode} {options.amount:.3g}, sparsity {sparsity:.3f}" + (f", ft {steps}" if steps else "")
    return Variant("pruned", reloaded, [folder / f for f in EXPORT_FILES], "timm local-dir", notes, record)
