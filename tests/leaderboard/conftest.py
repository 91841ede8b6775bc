import leaderboard_toy as toy
import pytest

from harness import registry


@pytest.fixture(scope="session", autouse=True)
def toy_shifts_registered():
    """Register the toy shifts the way a plugin would, so CLI paths resolve them."""
    with registry.shifts.scoped({name: _factory(name) for name in toy.SUITE}):
        yield


def _factory(name):
    def make():
        return toy.ToyShift(name)

    make.__qualname__ = f"toy_shift_{name}"
    return make


@pytest.fixture
def run_dir(tmp_path):
    return toy.write_run(tmp_path / "run", {"toy-net": (0.7, 1)})


@pytest.fixture
def card(tmp_path):
    return toy.write_card(tmp_path / "model.toml")
