"""The training tests' tiny model, data and one-thread fixture serve the retention methods' tests too."""
from tests.train.conftest import one_thread, tiny_data, tiny_dir  # noqa: F401 (fixtures)
