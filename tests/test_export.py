"""Exports load in plain timm, in a process that never imports selfsup; load_encoder reads both
exports and checkpoints, and refuses the wrong ones with errors that name the file."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfsup.checkpoint import CheckpointError
from selfsup.cli import main, run
from selfsup.export import EXPORT_WRITES, export, load_encoder
from selfsup.output_folder import foreign_entries
from tests.helpers import run_in_plain_timm


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_round_trip_in_plain_timm_without_selfsup(tiny_runs, tmp_path, method):
    run_info = tiny_runs[method]
    checkpoint = run_info["run_dir"] / "checkpoints" / "last.ckpt"
    out = export(checkpoint, tmp_path / "export")
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    features, printed = run_in_plain_timm(out, x, tmp_path)
    expected_pool = "token" if method == "simclr" else "avg"
    assert f"VisionTransformer {expected_pool} (5, 192)" in printed
    with torch.no_grad():
        reference = run_info["module"].features(x)
    assert (features - reference).abs().max().item() <= 1e-6


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_export_contents(tiny_runs, tmp_path, method):
    out = export(tiny_runs[method]["run_dir"] / "checkpoints" / "last.ckpt", tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "selfsup.json"]
    weights = load_file(out / "model.safetensors")
    assert not any(k.startswith(("projection", "decoder", "encoder.")) for k in weights)
    assert "cls_token" in weights and "blocks.0.attn.qkv.weight" in weights
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["model_args"]["img_size"] == [16, 16] and config["model_args"]["patch_size"] == 4
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5] and config["pretrained_cfg"]["input_size"] == [
        3,
        16,
        16,
    ]
    assert config["model_args"]["global_pool"] == ("token" if method == "simclr" else "avg")
    meta = json.loads((out / "selfsup.json").read_text())
    assert meta["method"] == method and meta["epochs"] == 2 and meta["data"]["source"] == "digits"
    assert meta["recipe"]["optim"]["name"] == "adamw"


def test_load_encoder_from_checkpoint_and_export_agree(tiny_runs, tmp_path):
    checkpoint = tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt"
    out = export(checkpoint, tmp_path / "export")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(out)(x), load_encoder(checkpoint)(x), rtol=0, atol=1e-6)
        avg = load_encoder(checkpoint, pool="avg")(x)
        torch.testing.assert_close(avg, tiny_runs["simclr"]["module"].features(x, "avg"), rtol=0, atol=1e-6)


def test_wrong_architecture_method_and_incomplete_folders_are_refused(tiny_runs, tmp_path):
    checkpoint = tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt"
    with pytest.raises(
        CheckpointError, match=r"last.ckpt.*vit_tiny_patch16_224 encoder with name=.*vit_small"
    ):
        load_encoder(checkpoint, name="vit_small_patch16_224")
    with pytest.raises(CheckpointError, match="img_size=16, but img_size=32 was expected"):
        load_encoder(checkpoint, img_size=32)
    with pytest.raises(CheckpointError, match="is a simclr checkpoint, but a mae checkpoint was expected"):
        load_encoder(checkpoint, method="mae")
    out = export(checkpoint, tmp_path / "export")
    with pytest.raises(CheckpointError, match="patch_size=4, but patch_size=16"):
        load_encoder(out, patch_size=16)
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"export folder .* lacks model.safetensors"):
        load_encoder(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        export(checkpoint, out)
    export(checkpoint, out, overwrite=True)
    assert (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind


def test_export_command_adds_probe_scores(tiny_runs, tmp_path, capsys):
    run_dir = tiny_runs["simclr"]["run_dir"]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    probe_file = tmp_path / "probe.json"
    probe_file.write_text(
        json.dumps(
            [
                {
                    "checkpoint": str(checkpoint),
                    "knn_top1": {"20": 0.5},
                    "linear_top1": 0.6,
                    "linear_top5": 0.9,
                    "pool": "token",
                }
            ]
        )
    )
    out = run(["export", str(checkpoint), "--out", str(tmp_path / "exp"), "--probe", str(probe_file)])
    assert Path(out).is_dir() and "local-dir:" in capsys.readouterr().out
    meta = json.loads((Path(out) / "selfsup.json").read_text())
    assert meta["probe"]["linear_top1"] == 0.6 and meta["probe"]["knn_top1"] == {"20": 0.5}


def test_overwrite_replaces_an_export_but_never_a_folder_holding_other_files(tiny_runs, tmp_path, capsys):
    """`--overwrite` deleted a user's important.txt with the folder it was in: it now replaces only a
    folder holding nothing but what an export writes, and refuses any other, naming what is there."""
    checkpoint = str(tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt")
    out = tmp_path / "export"
    main(["export", checkpoint, "--out", str(out)])
    assert foreign_entries(out, EXPORT_WRITES) == []  # everything an export writes is in EXPORT_WRITES
    main(["export", checkpoint, "--out", str(out), "--overwrite"])  # the bare flag parses
    main(["export", checkpoint, "--out", str(out), "--overwrite", "true"])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", checkpoint, "--out", str(out), "--overwrite", "false"])
    assert exit_info.value.code == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err.strip().splitlines()[-1]

    (out / "important.txt").write_text("keep me")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("and me")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", checkpoint, "--out", str(out), "--overwrite"])
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("selfsup: error: ") and "holds 2 entries that an export does not write" in last
    assert "(important.txt, notes)" in last and "nothing was deleted" in last
    assert (out / "important.txt").read_text() == "keep me" and (
        out / "notes" / "a.txt"
    ).read_text() == "and me"
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging folder left behind
    (tmp_path / "empty").mkdir()  # an empty folder is used as a new one: nothing in it to lose
    main(["export", checkpoint, "--out", str(tmp_path / "empty")])
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_selfsup_export_takes_either_kind_and_the_folder_writer_only_pretraining(tmp_path):
    """``selfsup.export`` exports a checkpoint of either kind (the dispatch sits above both exporters);
    ``selfsup.export.export`` writes pretraining backbones and names the way for a fine-tune."""
    from selfsup.exporting import export as export_any
    from tests.helpers import REPO

    finetune = REPO / "tests" / "fixtures" / "format1_finetune.ckpt"
    with pytest.raises(CheckpointError, match="is a finetune checkpoint: export it with selfsup.export"):
        export(finetune, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    out = export_any(finetune, tmp_path / "finetune")
    assert json.loads((out / "selfsup.json").read_text())["kind"] == "finetune"
