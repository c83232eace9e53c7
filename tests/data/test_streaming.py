import json

import pytest

from selfsup.data.streaming import check_written
from tests.helpers import write_image_folder


def test_data_optimize_shows_progress_counts_and_time(tmp_path, capfd):
    from selfsup.cli import run

    src = write_image_folder(tmp_path / "src", classes=("a", "b"), per_class=2, size=8, splits=("train",))
    manifest = run(
        ["data", "optimize", str(src), str(tmp_path / "out"), "--image_size", "8", "--num_workers", "1"]
    )
    out, err = capfd.readouterr()
    assert manifest["splits"] == {"train": 4}
    assert "train: 4 images from" in out  # before: the count
    assert "4/4" in err  # LitData's progress bar
    assert "train: 4 images in" in out and "images/s" in out  # after: the split's time
    assert f"to {tmp_path / 'out'} in " in out  # the whole command's time
    assert "lightning.ai" not in out  # LitData's own chatter is kept back


def test_a_short_litdata_write_is_an_error_naming_the_counts(tmp_path):
    split = tmp_path / "out" / "train"
    split.mkdir(parents=True)
    (split / "index.json").write_text(json.dumps({"chunks": [{"chunk_size": 3}, {"chunk_size": 4}]}))
    check_written(split, 7)  # complete: quiet
    with pytest.raises(RuntimeError, match=r"chunks hold 7 items, the folder has 9 images.*Delete .*out"):
        check_written(split, 9, "Worker 0 is done.\nAll workers are done. Exiting!")
    (split / "index.json").unlink()
    with pytest.raises(RuntimeError, match="no readable index.json"):
        check_written(split, 9)
