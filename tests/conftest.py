import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

if "MMLAB_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MMLAB_DATA"] = str(SHARED_DATA)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny runs are fastest on one thread, above all on a shared machine (a module asks for it
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config():
    """A CG-MNIST run small enough for a unit test (a second or two on a CPU)."""
    from mmlab import RunConfig

    def make(method="uniform", **overrides):
        base = dict(train_size=256, val_size=64, test_size=128, epochs=2, batch_size=32,
                    grad_probe_every=2, lr=0.01)
        base.update(overrides)
        method_options = base.pop("method_options", {})
        return RunConfig.from_profile(dataset="cgmnist", method=method, seed=base.pop("seed", 0),
                                      profile="smoke", method_options=method_options, **base)

    return make


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    path = tmp_path / "results"
    monkeypatch.setenv("MMLAB_RESULTS", str(path))
    return path


class LoggingState:
    """The least of a TrainState that a method's hooks can be called with on hand-made inputs: a
    ``log`` that keeps the last value of each name."""

    def __init__(self):
        self.logged = {}

    def log(self, name, value):
        self.logged[name] = float(value)


def without_timing(history):
    """A run's history without its wall-clock entries (which differ between runs)."""
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


def straight_and_resumed(config, tmp_path, method_factory=None):
    """Train ``config`` uninterrupted, and again with a crash after the first epoch
    followed by a resume; return both records."""
    import pytest
    from mmlab.training import train

    kwargs = lambda: {"method": method_factory()} if method_factory else {}  # noqa: E731
    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False, **kwargs())

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path / "resumed", progress=False, callbacks=[crash], **kwargs())
    resumed = train(config, checkpoint_dir=tmp_path / "resumed", progress=False, **kwargs())
    return straight, resumed


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """A data folder laid out as mmlab reads one (``mnist/`` with the four ``.gz`` files, and
    ``fsdd/recordings/`` where the recordings were found), linked to the real data wherever the
    library finds it (:mod:`data_sources`); the test is skipped, saying where MNIST was looked
    for, when it is not at hand."""
    from data_sources import real_fsdd_dir, real_mnist_gz_dir, require_real_mnist

    require_real_mnist()
    folder = tmp_path_factory.mktemp("real-data")
    (folder / "mnist").symlink_to(real_mnist_gz_dir())
    if real_fsdd_dir() is not None:
        (folder / "fsdd").mkdir()
        (folder / "fsdd" / "recordings").symlink_to(real_fsdd_dir())
    return folder


#: seconds nbval waits for a chapter cell's next output once the cell has finished (``make test`` runs the chapters
#: beside tests/). nbval hard-codes 5 s; on a loaded 2-core machine a training cell's last outputs can take longer to
#: arrive, and the cell then fails with its work done. (Here rather than in notebooks/conftest.py: two conftest
#: modules would clash on `from conftest import ...`.)
NOTEBOOK_OUTPUT_TIMEOUT = 120


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NOTEBOOK_OUTPUT_TIMEOUT
