"""The README's two commands are the ones that work: CI runs the test command verbatim."""

import re

from tests.helpers import REPO


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    blocks = bash_blocks(readme)
    quickstart, tests = blocks[0], blocks[1]
    assert "configs/quickstart.yaml" in quickstart and "python3 -m venv" in quickstart
    assert "pytest" in tests and "python3 -m venv" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
