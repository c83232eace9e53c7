"""Every YAML file in configs/ is complete and parses; the CPU-sized ones run one step."""

import re
from pathlib import Path

import pytest
import yaml

from selfsup.cli import run
from tests.helpers import REPO, write_image_folder

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def expand_braces(pattern: str) -> list[str]:
    """``a/{x,y}.yaml`` -> ``["a/x.yaml", "a/y.yaml"]`` (as the README writes several configs at once)."""
    brace = re.search(r"\{([^}]*)\}", pattern)
    if brace is None:
        return [pattern]
    head, tail = pattern[: brace.start()], pattern[brace.end() :]
    return [name for option in brace.group(1).split(",") for name in expand_braces(head + option + tail)]


def test_the_readme_names_every_config_and_every_config_it_names_exists():
    """The configs this file parses are the ones the README's table offers, no more, no fewer."""
    named = set()
    for pattern in sorted(set(re.findall(r"configs/[\w/{},*.-]*\.yaml", (REPO / "README.md").read_text()))):
        files = {path for name in expand_braces(pattern) for path in REPO.glob(name)}
        assert files, f"README.md names {pattern}, which matches no file"
        named |= files
    assert len(CONFIGS) >= 15 and set(CONFIGS) == named, sorted(map(str, set(CONFIGS) ^ named))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_parses_and_resolves(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("selfsup.")
    assert resolved["data"]["init_args"]["image_size"] > 0
    raw = yaml.safe_load(Path(config).read_text())
    assert "seed_everything" in raw  # complete files: a run is reproducible from its config alone


def test_cifar_config_runs_one_step_on_a_folder(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, size=32)
    monkeypatch.chdir(tmp_path)
    cli = run(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "simclr" / "vit_tiny_cifar10.yaml"),
            "--trainer.fast_dev_run=true",
            f"--data.init_args.root={root}",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=0",
            "--model.init_args.encoder_kwargs={depth: 1}",
            "--trainer.accelerator=cpu",
        ]
    )
    assert cli.trainer.global_step == 1
    assert cli.model.image_size == 32 and cli.model.encoder.patch_embed.patch_size == (4, 4)
    assert cli.model.augment_config.jitter_strength == 0.5  # the paper's CIFAR value, from the YAML


def test_quickstart_config_runs_as_written(tmp_path, monkeypatch):
    """The README's first command, unchanged but for fast_dev_run (one step, then the kNN table;
    the console-script run of the same config is tests/test_cli.py)."""
    monkeypatch.chdir(tmp_path)
    cli = run(["fit", "-c", str(REPO / "configs" / "quickstart.yaml"), "--trainer.fast_dev_run=true"])
    assert cli.trainer.global_step == 1
    assert cli.model.encoder.patch_embed.patch_size == (4, 4) and len(cli.model.encoder.blocks) == 4
