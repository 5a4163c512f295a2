"""Pure decision functions of the controller."""
from selm_ray.core.policies import least_loaded, retry_delays


def test_least_loaded_dispatch():
    assert least_loaded([2, 0, 1]) == 1 and least_loaded([1, 1, 1]) == 0
    assert retry_delays(4, 0.5, 1.0) == [0.5, 1.0, 1.0, 1.0]


def test_least_loaded_empty_pool_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="empty pool"):
        least_loaded([])
