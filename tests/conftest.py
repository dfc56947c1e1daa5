import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation cost (10x on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
