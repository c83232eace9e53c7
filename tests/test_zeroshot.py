"""configs/clip/digits.yaml through the CLI for each data source (fast_dev_run), and `selfsup zeroshot`
on the checkpoint it leaves: the same top-1 as the in-memory model, a JSON report and a PNG."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import run
from selfsup.eval.retrieval import pair_embeddings, retrieval_metrics
from selfsup.eval.zeroshot import zero_shot_accuracy
from tests.helpers import REPO

TINY = ["--model.init_args.encoder_kwargs={depth: 1}", "--model.init_args.text_layers=1",
        "--trainer.accelerator=cpu", "--data.init_args.batch_size=8"]  # fmt: skip


def pairs_csv(folder) -> str:
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((9, 9, 3), 30 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "pairs.csv").write_text(
        "filepath,title\n" + "".join(f"{i}.png,a grey square {i}\n" for i in range(8))
    )
    return str(folder / "pairs.csv")


def shards(folder) -> str:
    import io

    import webdataset as wds

    folder.mkdir()
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(8):
            buffer = io.BytesIO()
            Image.fromarray(np.full((9, 9, 3), 30 * i, dtype=np.uint8)).save(buffer, format="PNG")
            sink.write({"__key__": f"s{i}", "png": buffer.getvalue(), "txt": f"a grey square {i}"})
    return str(folder)


@pytest.mark.parametrize("source", ["csv", "webdataset"])
def test_fast_dev_run_on_pair_sources(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    root = pairs_csv(tmp_path / "data") if source == "csv" else shards(tmp_path / "data")
    cli = run(["fit", "-c", str(REPO / "configs" / "clip" / "digits.yaml"), "--trainer.fast_dev_run=true",
               *TINY, f"--data.init_args.source={source}", f"--data.init_args.root={root}",
               "--trainer.callbacks=[]", "--checkpoint.monitor=null"])  # fmt: skip
    assert cli.trainer.global_step == 1 and torch.isfinite(cli.trainer.logged_metrics["train/loss_step"])
    if source == "csv":  # selfsup zeroshot on pair data reports retrieval on the held-out pairs
        path = tmp_path / "clip.ckpt"
        cli.trainer.save_checkpoint(path)
        report = run(["zeroshot", str(path), "--data.val_root", root, "--out", str(tmp_path / "r")])
        model = cli.model.eval()
        image, text = pair_embeddings(model, cli.datamodule.pair_dataloader("train"), model.mean, model.std,
                                      torch.device("cpu"))  # fmt: skip
        assert report["pairs"] == 8
        assert report == {**json.loads((tmp_path / "r" / "retrieval.json").read_text()), "pairs": 8}
        for key, value in retrieval_metrics(image, text).items():
            assert report[key] == pytest.approx(value), key


def test_digits_config_then_zeroshot_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = run(
        ["fit", "-c", str(REPO / "configs" / "clip" / "digits.yaml"), "--trainer.fast_dev_run=true", *TINY]
    )
    assert cli.trainer.global_step == 1
    assert "zero-shot accuracy" in capsys.readouterr().out  # the table at the end
    path = tmp_path / "clip.ckpt"
    cli.trainer.save_checkpoint(path)
    data = cli.datamodule
    expected = zero_shot_accuracy(cli.model, data.eval_dataloader("val"), data.classnames, data.templates,
                                  16, cli.model.mean, cli.model.std)  # fmt: skip
    report = run(["zeroshot", str(path), "--out", str(tmp_path / "zs")])
    assert report["top1"] == pytest.approx(expected["top1"]) and report["top5"] == pytest.approx(
        expected["top5"]
    )
    assert json.loads((tmp_path / "zs" / "zeroshot.json").read_text())["classnames"][7] == "seven"
    assert (tmp_path / "zs" / "zeroshot_confusion.png").stat().st_size > 0
    assert "top-1" in capsys.readouterr().out
