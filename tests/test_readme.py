"""The README stays true: its Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "the README should show usage, RL² trials and a custom problem"
    custom: dict = {}
    for block in blocks:
        namespace: dict = {}  # every block runs on its own, as a reader would paste it
        exec(compile(block, str(README), "exec"), namespace)
        if "LeastSquares" in namespace:
            custom = namespace
    # The custom-problem example must give a working environment.
    assert custom, "the README should show a custom task family"
    namespace = custom
    obs, _ = namespace["env"].reset(seed=0)
    assert namespace["env"].observation_space.contains(obs)
    assert namespace["envs"].num_envs == 16
