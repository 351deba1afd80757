"""pytest settings for the chapters when they run as tests (``make test``: nbval, in the smoke profile)."""

import pytest

#: seconds nbval waits for a cell's next output once the cell has finished (nbval's own default, 5 s, is hard-coded;
#: on a loaded 2-core machine a training cell's last outputs can take longer to arrive, and the cell then fails)
OUTPUT_TIMEOUT = 120


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT
