import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Tests seed their own draws; this only keeps any unseeded draw from depending on test order.
    torch.manual_seed(12345)
    yield
