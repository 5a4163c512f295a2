import math

import pytest
import torch

from selm_ray.core.losses import (
    LOSSES, compute_loss, dpo_loss, get_loss, ipo_loss, scattered_logps, selm_loss, sequence_logps,
)


def _naive_logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _naive_selm(pc, pr, rc, rr, pref, rref, beta, alpha):
    total = 0.0
    for i in range(len(pc)):
        logits = (pc[i] - pr[i]) - (rc[i] - rr[i])
        total += -_naive_logsigmoid(beta * logits) + alpha * beta * (pref[i] - rref[i])
    return total / len(pc)


def _rand(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(-50 * torch.rand(n, generator=g, dtype=torch.float64)) for _ in range(6)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta,alpha", [(0.01, 0.001), (0.1, 0.0001), (0.5, 0.005), (1.0, 0.0)])
def test_selm_matches_naive_float64(seed, beta, alpha):
    t = _rand(7, seed)
    got = selm_loss(*t, beta=beta, alpha=alpha)
    want = _naive_selm(*[x.tolist() for x in t], beta, alpha)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_dpo_matches_naive_float64(seed):
    pc, pr, rc, rr, _, _ = _rand(9, seed)
    want = _naive_selm(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), [0] * 9, [0] * 9, 0.1, 0.0)
    assert dpo_loss(pc, pr, rc, rr, 0.1).item() == pytest.approx(want, rel=1e-12)


def test_hand_worked_dpo_selm_ipo():
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    pc, pr, rc, rr = t(-1.0), t(-2.0), t(-1.5), t(-1.5)  # logits = (1) - (0) = 1
    dpo = math.log(1 + math.exp(-0.5))  # -logsigmoid(0.5 * 1) = 0.474077...
    assert dpo_loss(pc, pr, rc, rr, 0.5).item() == pytest.approx(0.4740769841801067, rel=1e-12)
    assert dpo == pytest.approx(0.4740769841801067, rel=1e-12)
    # optimism: alpha * beta * (log pi(y_ref) - log pi_ref(y_ref)) = 0.1 * 0.5 * (-3 - -2) = -0.05
    assert selm_loss(pc, pr, rc, rr, t(-3.0), t(-2.0), 0.5, 0.1).item() == pytest.approx(dpo - 0.05, rel=1e-12)
    assert ipo_loss(pc, pr, rc, rr, 0.5).item() == pytest.approx(0.0)  # (1 - 1/(2*0.5))^2
    assert ipo_loss(pc, pr, rc, rr, 0.25).item() == pytest.approx(1.0)  # (1 - 2)^2


def test_alpha_zero_is_dpo_bit_for_bit():
    pc, pr, rc, rr, pref, rref = _rand(16, 3)
    for dtype in (torch.float32, torch.float64):
        args = [x.to(dtype) for x in (pc, pr, rc, rr)]
        a = selm_loss(*args, pref.to(dtype), rref.to(dtype), beta=0.01, alpha=0.0)
        b = dpo_loss(*args, beta=0.01)
        assert torch.equal(a, b)
    # even when y_ref log-probs are garbage, alpha = 0 must not see them
    bad = torch.full((16,), float("nan"), dtype=torch.float64)
    assert torch.equal(selm_loss(pc, pr, rc, rr, bad, bad, 0.01, 0.0), dpo_loss(pc, pr, rc, rr, 0.01))


def test_selm_differs_from_dpo_when_alpha_positive():
    pc, pr, rc, rr, pref, rref = _rand(4, 1)
    assert not torch.equal(selm_loss(pc, pr, rc, rr, pref, rref, 0.1, 0.01), dpo_loss(pc, pr, rc, rr, 0.1))


class _TinyLM(torch.nn.Module):
    def __init__(self, vocab=11, dim=8):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.out(torch.tanh(self.emb(ids)))  # (B, T, V)


def test_optimism_gradient_lowers_policy_logp_of_y_ref():
    model = _TinyLM().double()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])  # prompt = 2 tokens, y_ref = 4 tokens
    ref_lp = sequence_logps(model(ids), ids, mask).detach()
    zero = torch.zeros(1, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(3):
        pol_lp = sequence_logps(model(ids), ids, mask)
        # chosen/rejected terms are constants here, so only the optimism term moves the model
        loss = selm_loss(zero, zero, zero, zero, pol_lp, ref_lp, beta=1.0, alpha=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sequence_logps(model(ids), ids, mask).item()
    assert after < ref_lp.item() - 1e-3


def test_sequence_logps_sums_response_tokens_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    got = sequence_logps(logits, labels, mask)
    lsm = logits.log_softmax(-1)
    want = [sum(lsm[b, t - 1, labels[b, t]].item() for t in range(1, 5) if mask[b, t]) for b in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    # right-padding with garbage labels (-100) and mask 0 changes nothing
    pad_logits = torch.cat([logits, torch.randn(2, 3, 7, generator=g, dtype=torch.float64)], 1)
    pad_labels = torch.cat([labels, torch.full((2, 3), -100)], 1)
    pad_mask = torch.cat([mask, torch.zeros(2, 3, dtype=mask.dtype)], 1)
    assert torch.equal(sequence_logps(pad_logits, pad_labels, pad_mask), got)


def test_sequence_logps_is_a_sum_not_a_mean():
    logits = torch.zeros(1, 5, 4, dtype=torch.float64)  # uniform: each token log(1/4)
    labels = torch.tensor([[0, 1, 2, 3, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 1]])
    assert sequence_logps(logits, labels, mask).item() == pytest.approx(4 * math.log(0.25))


def test_sequence_logps_shape_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        sequence_logps(torch.zeros(1, 4, 3), torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5))


def test_scattered_logps_sum_each_rows_listed_tokens_like_sequence_logps():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    # the same scored tokens listed one by one, rows interleaved: (predicting logit, target, row)
    listed = [(b, t - 1, labels[b, t].item()) for t in range(1, 5) for b in range(2) if mask[b, t]]
    got = scattered_logps(torch.stack([logits[b, t] for b, t, _ in listed]),
                          torch.tensor([y for _, _, y in listed]), torch.tensor([b for b, _, _ in listed]), 3)
    assert got[:2].tolist() == pytest.approx(sequence_logps(logits, labels, mask).tolist(), rel=1e-12)
    assert got[2].item() == 0.0  # a row with no token
    with pytest.raises(ValueError, match="shape mismatch"):
        scattered_logps(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1)


def test_registry_and_metrics():
    assert set(LOSSES) == {"dpo", "selm", "ipo"}
    with pytest.raises(ValueError, match="unknown loss 'kto'"):
        get_loss("kto")
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    logps = {"policy_chosen": t(-1.0, -5.0), "policy_rejected": t(-2.0, -1.0),
             "ref_chosen": t(-1.5, -4.0), "ref_rejected": t(-1.5, -1.0)}
    with pytest.raises(ValueError, match="y_ref"):
        compute_loss("selm", logps, beta=0.1, alpha=0.01)
    loss, m = compute_loss("dpo", logps, beta=0.1)
    assert loss.item() == pytest.approx(dpo_loss(*logps.values(), 0.1).item())
    assert m["rewards/chosen"] == pytest.approx(0.1 * (0.5 + -1.0) / 2)
    assert m["rewards/accuracy"] == pytest.approx(0.5)  # pair 0 margin +0.05, pair 1 margin -0.1
    logps.update(policy_refresp=t(-3.0, -3.0), ref_refresp=t(-2.0, -2.0))
    loss, m = compute_loss("selm", logps, beta=0.1, alpha=0.01)
    assert m["logps/ref_response_gap"] == pytest.approx(-1.0)
