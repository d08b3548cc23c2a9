"""InfoNCE against a slow, obviously-correct float64 reference, and its gradients."""

import math

import pytest
import torch

from cpc_lightning.model.infonce import info_nce


def reference_info_nce(pred, cand, pos_idx, neg_idx, weight, temperature=1.0):
    """Loops over steps and anchors; float64; gathers vectors and scores them one by one."""
    pred, cand = pred.double(), cand.double()
    k_steps, m, _ = pred.shape
    losses, accs = [], []
    for k in range(k_steps):
        total, correct, count = 0.0, 0.0, 0.0
        for a in range(m):
            if not weight[k, a]:
                continue
            row = neg_idx[0 if neg_idx.shape[0] == 1 else k, a]
            logits = [torch.dot(pred[k, a], cand[pos_idx[k, a]]) / temperature]
            logits += [torch.dot(pred[k, a], cand[j]) / temperature for j in row]
            logits = torch.stack(logits)
            total = total - torch.log_softmax(logits, 0)[0]
            rivals = [logits[1 + i] for i, j in enumerate(row) if j != pos_idx[k, a]]
            correct += float(all(logits[0] > r for r in rivals))
            count += 1
        losses.append(total / max(count, 1))
        accs.append(correct / max(count, 1))
    return torch.stack(losses), torch.tensor(accs, dtype=torch.float64)


def make_case(seed, k=3, m=20, d=8, nc=30, n=5, shared=False):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(k, m, d, generator=g, dtype=torch.float64, requires_grad=True)
    cand = torch.randn(nc, d, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.randint(0, nc, (k, m), generator=g)
    neg = torch.randint(0, nc, (1 if shared else k, m, n), generator=g)
    weight = torch.rand(k, m, generator=g) > 0.2
    return pred, cand, pos, neg, weight


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_matches_reference(shared, temperature):
    pred, cand, pos, neg, weight = make_case(0, shared=shared)
    out = info_nce(pred.float(), cand.float(), pos, neg, weight, temperature)
    ref_loss, ref_acc = reference_info_nce(pred, cand, pos, neg, weight, temperature)
    torch.testing.assert_close(out.loss_k.double(), ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.acc_k.double(), ref_acc)
    torch.testing.assert_close(out.loss.double(), ref_loss.mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.mi_k.double(), math.log(neg.shape[-1] + 1) - ref_loss, atol=1e-5, rtol=1e-5
    )
    assert out.num_anchors.tolist() == weight.sum(1).float().tolist()


def test_float64_path_to_1e6_and_gradients():
    """Scores are computed in float32 by design; with float32-exact inputs the result matches
    the float64 reference to 1e-6, and the gradients match the reference's autograd ones."""
    pred, cand, pos, neg, weight = make_case(1)
    # Inputs on a coarse grid are exact in float32, so float32 and float64 scores agree.
    pred = (pred.detach() * 8).round().div(8).requires_grad_()
    cand = (cand.detach() * 8).round().div(8).requires_grad_()
    out = info_nce(pred, cand, pos, neg, weight)
    ref_loss, _ = reference_info_nce(pred, cand, pos, neg, weight)
    assert abs(out.loss.item() - ref_loss.mean().item()) < 1e-6
    g_fast = torch.autograd.grad(out.loss, (pred, cand))
    g_ref = torch.autograd.grad(ref_loss.mean(), (pred, cand))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-6, rtol=1e-5)


def test_gradcheck_in_float64():
    pred, cand, pos, neg, weight = make_case(2, k=2, m=6, d=4, nc=9, n=3)
    assert torch.autograd.gradcheck(
        lambda p, c: info_nce(p, c, pos, neg, weight).loss, (pred, cand)
    )


def test_float64_inputs_match_reference_to_1e6():
    pred, cand, pos, neg, weight = make_case(4, shared=True)
    out = info_nce(pred, cand, pos, neg, weight)
    ref_loss, ref_acc = reference_info_nce(pred, cand, pos, neg, weight)
    torch.testing.assert_close(out.loss_k, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.acc_k.double(), ref_acc)


def test_perfect_predictor_has_full_accuracy_and_mi_near_bound():
    d, m = 16, 10
    cand = torch.eye(d)[:m] * 20
    pred = (torch.eye(d)[:m] * 20)[None]
    pos = torch.arange(m)[None]
    neg = torch.stack([torch.tensor([j for j in range(m) if j != a][:5]) for a in range(m)])[None]
    out = info_nce(pred, cand, pos, neg)
    assert out.acc_k.item() == 1.0
    assert out.mi_k.item() == pytest.approx(math.log(6), abs=1e-3)


def test_ties_are_not_successes():
    cand = torch.ones(6, 4)
    pred = torch.ones(1, 3, 4)
    out = info_nce(
        pred, cand, torch.zeros(1, 3, dtype=torch.long), torch.tensor([[[1, 2], [0, 3], [4, 5]]])
    )
    assert out.acc_k.item() == 0.0


def test_logits_float32_under_bf16_autocast():
    pred, cand, pos, neg, weight = make_case(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = info_nce(pred.float(), cand.float(), pos, neg, weight)
        ref = info_nce(pred.float(), cand.float(), pos, neg, weight)
    assert out.loss.dtype == torch.float32
    exact = info_nce(pred.float(), cand.float(), pos, neg, weight)
    torch.testing.assert_close(ref.loss, exact.loss)


def test_bf16_operands_give_float32_logits_and_bf16_accurate_gradients():
    """The CPU bf16 path: logits exact for the bf16 inputs, repeated indices accumulate."""
    from cpc_lightning.model.infonce import candidate_logits

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 40, 32, generator=g).bfloat16().requires_grad_()
    cand = torch.randn(50, 32, generator=g).bfloat16().requires_grad_()
    index = torch.randint(0, 50, (3, 40, 9), generator=g)
    index[:, :, 1] = index[:, :, 0]  # the positive again among the negatives
    logits = candidate_logits(pred, cand, index)
    assert logits.dtype == torch.float32
    p64 = pred.detach().double().requires_grad_()
    c64 = cand.detach().double().requires_grad_()
    ref = (p64 @ c64.t()).gather(2, index)
    torch.testing.assert_close(logits.double(), ref, atol=1e-4, rtol=1e-5)
    up = torch.randn(logits.shape, generator=g)
    logits.backward(up)
    ref.backward(up.double())
    for ours, exact in ((pred.grad, p64.grad), (cand.grad, c64.grad)):
        assert ours.dtype == torch.bfloat16
        assert ((ours.double() - exact).norm() / exact.norm()).item() < 1e-2


# ------------------------------------------------------------- num_negatives: all (info_nce_all)
def reference_info_nce_all(pred, cand, pos_idx, allowed, weight):
    """Loops over steps and anchors; float64; a cross-entropy over the positive and every other
    allowed candidate, written out by hand."""
    pred, cand = pred.double(), cand.double()
    losses, accs, mis = [], [], []
    for k in range(pred.shape[0]):
        total, correct, log_n1, count = 0.0, 0.0, 0.0, 0
        for a in range(pred.shape[1]):
            if not weight[k, a]:
                continue
            p = int(pos_idx[k, a])
            others = [j for j in range(cand.shape[0]) if allowed[a, j] and j != p]
            logits = torch.stack([pred[k, a] @ cand[j] for j in [p, *others]])
            total = total - torch.log_softmax(logits, 0)[0]
            correct += float(all(logits[0] > r for r in logits[1:]))
            log_n1 += math.log(len(others) + 1)
            count += 1
        losses.append(total / count)
        accs.append(correct / count)
        mis.append(log_n1 / count - losses[-1])
    return torch.stack(losses), torch.tensor(accs, dtype=torch.float64), torch.stack(mis)


def test_all_candidates_match_a_hand_written_cross_entropy():
    from cpc_lightning.model.infonce import info_nce_all

    pred, cand, pos, _, weight = make_case(5, k=3, m=12, nc=20)
    allowed = torch.rand(12, 20, generator=torch.Generator().manual_seed(1)) > 0.3
    out = info_nce_all(pred, cand, pos, allowed, weight)
    ref_loss, ref_acc, ref_mi = reference_info_nce_all(pred, cand, pos, allowed, weight)
    torch.testing.assert_close(out.loss_k, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.acc_k.double(), ref_acc)
    torch.testing.assert_close(out.mi_k, ref_mi, atol=1e-6, rtol=0)
    assert out.num_anchors.tolist() == weight.sum(1).float().tolist()
    g_fast = torch.autograd.grad(out.loss, (pred, cand))
    g_ref = torch.autograd.grad(ref_loss.mean(), (pred, cand))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_all_candidates_equal_info_nce_given_every_other_column():
    """With every column allowed, info_nce_all is info_nce whose negatives are all columns but
    the positive, so mi_k saturates at log(Nc)."""
    from cpc_lightning.model.infonce import info_nce_all

    pred, cand, pos, _, weight = make_case(6, k=2, m=8, nc=10)
    neg = torch.stack(
        [torch.stack([torch.tensor([j for j in range(10) if j != p]) for p in row]) for row in pos]
    )
    out = info_nce_all(pred, cand, pos, torch.ones(8, 10, dtype=torch.bool), weight)
    ref = info_nce(pred, cand, pos, neg, weight)
    for field in ("loss_k", "acc_k", "mi_k"):
        torch.testing.assert_close(getattr(out, field).double(), getattr(ref, field).double())


def test_all_candidates_bf16_path_keeps_every_score():
    from cpc_lightning.model.infonce import all_candidate_logits

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 30, 16, generator=g).bfloat16().requires_grad_()
    cand = torch.randn(40, 16, generator=g).bfloat16().requires_grad_()
    logits = all_candidate_logits(pred, cand)
    assert logits.dtype == torch.float32 and logits.shape == (2, 30, 40)
    p64 = pred.detach().double().requires_grad_()
    c64 = cand.detach().double().requires_grad_()
    ref = p64 @ c64.t()
    torch.testing.assert_close(logits.double(), ref, atol=1e-4, rtol=1e-5)
    up = torch.randn(logits.shape, generator=g)
    logits.backward(up)
    ref.backward(up.double())
    for ours, exact in ((pred.grad, p64.grad), (cand.grad, c64.grad)):
        assert ((ours.double() - exact).norm() / exact.norm()).item() < 1e-2


@pytest.mark.parametrize("masked", [False, True])
def test_all_candidates_ties_are_not_successes(masked):
    from cpc_lightning.model.infonce import info_nce_all

    allowed = torch.ones(3, 6, dtype=torch.bool)
    if masked:
        allowed[:, 5] = False
    out = info_nce_all(torch.ones(1, 3, 4), torch.ones(6, 4), torch.zeros(1, 3).long(), allowed)
    assert out.acc_k.item() == 0.0
    assert out.mi_k.item() == pytest.approx(0.0, abs=1e-6)  # log(N + 1) - log(N + 1)
