"""ImageTextDataModule: template captions, CSV / JSONL pairs, WebDataset shards split across ranks and
workers, the tokenizer (offline, truncating with one warning), and one-line errors."""

import io
import json
import warnings

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from selfsup import ImageTextDataModule
from selfsup.data.captions import TokenizeCollate, webdataset_pairs
from selfsup.data.image_text import shard_urls


def png(path, value: int) -> None:
    Image.fromarray(np.full((10, 12, 3), value, dtype=np.uint8)).save(path)


def test_digits_captions_from_templates():
    data = ImageTextDataModule(image_size=16, batch_size=8, num_workers=0, context_length=16)
    assert data.classnames[7] == "seven" and data.templates == ["a photo of the number {}."]
    images, tokens = next(iter(data.train_dataloader()))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8
    assert tokens.shape == (8, 16) and tokens.dtype == torch.long
    captions = [
        open_clip.decode(t).replace("<start_of_text>", "").split("<end_of_text>")[0].strip() for t in tokens
    ]
    assert all(c.startswith("a photo of the number ") for c in captions)
    assert {c.replace(".", " ").split()[-1] for c in captions} <= set(data.classnames)
    # evaluation keeps class labels
    x, labels = next(iter(data.eval_dataloader("val", batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and labels.dtype == torch.long


def test_tokenizer_works_offline_and_truncates_once_with_a_warning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    collate = TokenizeCollate(context_length=8)
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    short = [(image, "a photo of a cat.", "here")]
    _, tokens = collate(short)
    assert torch.equal(tokens, open_clip.tokenize(["a photo of a cat."], context_length=8))
    long = [(image, "one two three four five six seven eight nine ten", "file.csv, line 3")]
    with pytest.warns(UserWarning, match=r"longer than the context length \(8 tokens\).*file.csv, line 3"):
        _, tokens = collate(long)
    assert tokens.shape == (1, 8) and tokens[0, -1] == collate.tokenizer.eot_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collate(long)  # said once


def test_csv_and_jsonl_pairs_and_one_line_errors(tmp_path):
    for i in range(4):
        png(tmp_path / f"{i}.png", 40 * i)
    (tmp_path / "pairs.csv").write_text(
        "filepath,title\n" + "".join(f"{i}.png,image number {i}\n" for i in range(4))
    )
    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"img": f"{i}.png", "cap": f"c {i}"}) + "\n" for i in range(4))
    )
    for source, root, keys in (
        ("csv", "pairs.csv", {}),
        ("jsonl", "pairs.jsonl", {"image_key": "img", "caption_key": "cap"}),
    ):
        data = ImageTextDataModule(
            source, str(tmp_path / root), image_size=8, batch_size=4, num_workers=0, **keys
        )
        images, tokens = next(iter(data.train_dataloader()))
        assert images.shape == (4, 3, 8, 8) and tokens.shape == (4, 77)
        assert sorted(images[:, 0, 0, 0].tolist()) == [0, 40, 80, 120]
    (tmp_path / "empty.csv").write_text("filepath,title\n0.png,ok\n1.png,  \n")
    with pytest.raises(ValueError, match=r"empty.csv, line 3: the caption is empty"):
        ImageTextDataModule("csv", str(tmp_path / "empty.csv"), num_workers=0).setup()
    (tmp_path / "missing.csv").write_text("filepath,title\nnope.png,a caption\n")
    data = ImageTextDataModule(
        "csv", str(tmp_path / "missing.csv"), image_size=8, batch_size=1, num_workers=0
    )
    with pytest.raises(Exception, match=r"nope.png.*missing.csv, line 2"):
        next(iter(data.train_dataloader()))


def write_shards(folder, shards: int, per_shard: int) -> list[str]:
    import webdataset as wds

    folder.mkdir()
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                buffer = io.BytesIO()
                Image.fromarray(np.full((6, 6, 3), 10 * s + i, dtype=np.uint8)).save(buffer, format="PNG")
                sink.write({"__key__": f"{s}_{i}", "png": buffer.getvalue(), "txt": f"sample {s} {i}"})
    return shard_urls(str(folder))


def test_webdataset_split_across_two_ranks_and_two_workers_reads_every_sample_once(tmp_path):
    urls = write_shards(tmp_path / "shards", shards=8, per_shard=3)
    seen = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(
            webdataset_pairs(urls, 4, rank=rank, world=2), batch_size=None, num_workers=2
        )
        seen += [where.rsplit("record ", 1)[1] for _, _, where in loader]
    assert sorted(seen) == sorted(f"{s}_{i}" for s in range(8) for i in range(3))
    # through the data module: uint8 images and tokens
    data = ImageTextDataModule(
        "webdataset", str(tmp_path / "shards"), image_size=4, batch_size=6, num_workers=0
    )
    images, tokens = next(iter(data.train_dataloader()))
    assert images.shape == (6, 3, 4, 4) and tokens.shape == (6, 77)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "00000.tar").write_bytes(b"not a tar file at all" * 40)
    bad = ImageTextDataModule("webdataset", str(tmp_path / "bad"), image_size=4, batch_size=1, num_workers=0)
    with pytest.raises(ValueError, match=r"unreadable WebDataset shard '.*00000.tar'"):
        next(iter(bad.train_dataloader()))
    with pytest.raises(ValueError, match="at least one shard per process"):
        webdataset_pairs(urls[:1], 4, rank=0, world=2)
