"""The eager sampled-token rank our CPU engines use equals vLLM's compiled one (engines/cpu_sampler.py)."""
import pytest
import torch


def test_eager_rank_equals_vllms_and_replaces_it_in_the_sampler():
    from vllm.v1.sample import sampler
    from vllm.v1.sample.ops.logprobs import batched_count_greater_than

    from selm_ray.engines import cpu_sampler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 300, generator=g).log_softmax(-1)
    x[:, :50] = x[:, 50:100]  # ties: a tied entry counts (>=), as in vLLM
    picks = torch.randint(0, 300, (7, 1), generator=g)
    values = x.gather(-1, picks)
    ours = cpu_sampler.count_greater_or_equal(x, values)
    assert ours.tolist() == batched_count_greater_than(x, values).tolist()
    # by hand: rank 1 = the row's largest entry
    assert ours.tolist() == [sum(int(v >= values[i, 0]) for v in x[i]) for i in range(7)]
    assert cpu_sampler.apply() is True
    assert sampler.batched_count_greater_than is cpu_sampler.count_greater_or_equal
    with pytest.raises(ValueError, match=r"expected x \(B, V\)"):
        cpu_sampler.count_greater_or_equal(x, values[:, 0])
