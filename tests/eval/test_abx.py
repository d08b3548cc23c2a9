"""ABX: item files and generation, frame mapping, angular distance, batched DTW, triples and
upstream (Libri-light) averaging, against hand-computed values and a naive reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cpc_lightning.eval.abx import (
    ITEM_HEADER,
    ItemSet,
    abx,
    angular_distance,
    dtw,
    item_frames,
    items_from_frame_labels,
    items_from_segments,
    limit_items,
    read_items,
    write_items,
)
from cpc_lightning.eval.abx import groups as abx_groups
from cpc_lightning.eval.abx import tokens as abx_tokens
from cpc_lightning.eval.abx.reference import abx_reference, dtw_reference

# ----------------------------------------------------------------------------- fixtures


def _one_file_per_token(tokens):
    """``tokens``: (features (T, D), phone, prev, next, speaker); each token is its own file."""
    items, feats = ItemSet(), {}
    for k, (f, phone, prev, nxt, spk) in enumerate(tokens):
        feats[f"t{k}"] = torch.as_tensor(f, dtype=torch.float32)
        items.append(f"t{k}", 0.0, 100.0, phone, prev, nxt, spk)  # all frames of the file
    return feats, items


def _template_set(swap: bool, noise: float = 0.0, seed: int = 0):
    """3 contexts x 2 speakers x phones p, q, 3 tokens a cell. Every token of a phone is one
    template (``swap``: speaker s2 uses q's template for p and vice versa)."""
    g = torch.Generator().manual_seed(seed)
    temp = {"p": torch.randn(5, 6, generator=g), "q": torch.randn(4, 6, generator=g)}
    tokens = []
    for c in ("a_b", "c_d", "e_f"):
        prev, nxt = c.split("_")
        for s in ("s1", "s2"):
            for p in ("p", "q"):
                src = {"p": "q", "q": "p"}[p] if (swap and s == "s2") else p
                for _ in range(3):
                    f = temp[src] + noise * torch.randn(temp[src].shape, generator=g)
                    tokens.append((f, p, prev, nxt, s))
    return _one_file_per_token(tokens)


def _labelled_corpus(seed: int, n_files: int = 12, n_runs: int = 18, n_phones: int = 3):
    """Random phone-label sequences (runs of 2..6 frames) with per-phone templates plus noise."""
    rng = np.random.default_rng(seed)
    temps = rng.standard_normal((n_phones, 5))
    labels, feats, speakers = {}, {}, {}
    for f in range(n_files):
        seq, last = [], -1
        for _ in range(n_runs):
            v = int(rng.choice([p for p in range(n_phones) if p != last]))
            seq += [v] * int(rng.integers(2, 7))
            last = v
        lab = np.asarray(seq)
        feats[f"u{f}"] = torch.as_tensor(
            temps[lab] + 1.2 * rng.standard_normal((lab.size, 5)), dtype=torch.float32
        )
        labels[f"u{f}"] = lab
        speakers[f"u{f}"] = f"s{f % 3}"
    return labels, feats, speakers


# ----------------------------------------------------------------------------- items


def test_item_file_round_trip(tmp_path):
    items = ItemSet()
    items.append("2107", 0.3225, 0.5225, "n", "ae", "d", "8193")
    items.append("42", 0.1 + 0.2, 1 / 3, "d", "n", "l", "2222")
    path = tmp_path / "x.item"
    write_items(items, path)
    text = path.read_text().splitlines()
    assert text[0] == ITEM_HEADER
    assert text[1] == "2107 0.3225 0.5225 n ae d 8193"
    back = read_items(path)
    assert back == items
    assert back.onset[1] == 0.1 + 0.2 and back.offset[1] == 1 / 3  # exact floats
    with pytest.raises(ValueError):
        bad = ItemSet()
        bad.append("a b", 0.0, 1.0, "p", "x", "y", "s")
        write_items(bad, tmp_path / "bad.item")
    (tmp_path / "short.item").write_text(ITEM_HEADER + "\nf 0.1 0.2 p x y\n")
    with pytest.raises(ValueError):
        read_items(tmp_path / "short.item")


def test_items_from_frame_labels_runs_contexts_and_edges():
    #          0  1  2  3  4  5  6  7  8  9 10 11 12 13 14
    lab = [5, 5, 1, 1, 1, 2, 2, 3, 3, 3, -1, 4, 4, 0, 0]
    # runs: 5[0,2) 1[2,5) 2[5,7) 3[7,10) ?[10,11) 4[11,13) 0[13,15)
    items = items_from_frame_labels({"f": lab}, {"f": "spk"}, ignore=[0])
    assert items.phone == ["1", "2"]  # 5: edge; 3 and 4: next to unknown; 0: ignored
    assert items.prev == ["5", "1"] and items.next == ["2", "3"]
    assert items.onset == [0.02, 0.05] and items.offset == [0.05, 0.07]
    assert items.speaker == ["spk", "spk"] and items.file == ["f", "f"]
    names = [f"ph{i}" for i in range(6)]
    sil = items_from_frame_labels(
        {"f": np.asarray(lab)}, {"f": "spk"}, phone_names=names, edge_context="SIL", frame_rate=50.0
    )
    # 0 is not ignored now; the edge runs 5 and 0 get SIL as their missing context
    assert sil.phone == ["ph5", "ph1", "ph2", "ph0"]
    assert (sil.prev[0], sil.next[0]) == ("SIL", "ph1")
    assert (sil.prev[3], sil.next[3]) == ("ph4", "SIL")
    assert sil.onset == [0.0, 0.04, 0.1, 0.26] and sil.offset == [0.04, 0.1, 0.14, 0.3]  # 50 Hz
    # label 0 is not ignored here: the run 4 still has an unknown left neighbour; 0 is an edge
    assert items_from_frame_labels({"f": lab}, {"f": "spk"}).phone == ["1", "2"]


def test_items_from_segments_and_limit():
    # given out of onset order on purpose: h# s t ih h#
    segs = {"a": [(0.3, 0.4, "t"), (0.0, 0.1, "h#"), (0.1, 0.3, "s"), (0.4, 0.6, "ih")]}
    segs["a"].append((0.6, 0.7, "h#"))
    items = items_from_segments(segs, {"a": "dr1"}, ignore_phones=["h#"])
    assert items.phone == ["t"] and (items.prev[0], items.next[0]) == ("s", "ih")
    assert (items.onset[0], items.offset[0]) == (0.3, 0.4)
    kept = items_from_segments(segs, {"a": "dr1"}, edge_context="SIL")
    assert kept.phone == ["h#", "s", "t", "ih", "h#"] and kept.prev[0] == "SIL"

    many = ItemSet()
    for k in range(10):
        many.append(f"f{k}", 0.0, 1.0, "p" if k < 7 else "q", "x", "y", "s")
    lim = limit_items(many, 3, seed=1)
    assert lim.phone.count("p") == 3 and lim.phone.count("q") == 3
    assert lim.file == sorted(lim.file, key=lambda f: int(f[1:]))  # original order kept
    assert lim == limit_items(many, 3, seed=1)


def test_item_frames_libri_light_mapping():
    # ZeroSpeech times at 100 Hz: ceil(32.25 - 0.5) = 32, floor(52.25 - 0.5) = 51
    start, end = item_frames([0.3225], [0.5225], 100.0, 1000)
    assert (start[0], end[0]) == (32, 51)
    # a label run [i0, i1) written as [i0 / r, i1 / r] reads back one frame short: [i0, i1 - 1)
    i0 = np.arange(0, 97)
    i1 = i0 + 3
    start, end = item_frames(i0 / 100.0, i1 / 100.0, 100.0, 1000)
    assert (start == i0).all() and (end == i1 - 1).all()
    start, end = item_frames(i0 / 100.0, i1 / 100.0, 100.0, 1000, mapping="round")
    assert (start == i0).all() and (end == i1).all()
    # clipping at the features' end and tokens that lie past it
    start, end = item_frames([0.05, 0.2], [0.3, 0.4], 100.0, 12)
    assert (start.tolist(), end.tolist()) == ([5, 20], [12, 12])  # second: end <= start, skipped
    start, end = item_frames([0.0], [0.01], 100.0, 12)  # one frame: floor(0.5) = 0, empty
    assert end[0] <= start[0]


# ----------------------------------------------------------------------------- distances


def test_angular_distance_values_and_zero_frames():
    a = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, -1.0, 0]])
    b = torch.tensor([[-0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [0, 1.0, 0, 0], [2.0, 0, 0, 0]])
    d = angular_distance(a, b)
    # cos = -1/2 -> 2/3; zero vs non-zero -> 1; zero vs zero -> 0; orthogonal -> 1/2; same -> 0
    expected = torch.tensor([[2 / 3, 1.0, 0.5, 0.0], [1.0, 0.0, 1.0, 1.0], [1 / 3, 1.0, 0.5, 0.5]])
    assert torch.allclose(d, expected, atol=1e-6)
    batched = angular_distance(torch.randn(3, 4, 5), torch.randn(3, 6, 5))
    assert batched.shape == (3, 4, 6) and batched.min() >= 0 and batched.max() <= 1


def test_dtw_hand_computed():
    # d = [[.1 .5 .9]   C = [[.1 .6 1.5]   back from (1,2): up 1.5, left .3, diag .6 -> left;
    #      [.6 .2 .3]]       [.7 .3  .6]]  (1,1): diag .1 is lowest -> (0,0). Path 3 cells.
    # normalised cost = .6 / 3 = .2
    cost = torch.tensor([[[0.1, 0.5, 0.9], [0.6, 0.2, 0.3]]])
    assert dtw(cost, torch.tensor([2]), torch.tensor([3])).item() == pytest.approx(0.2, abs=1e-6)
    # d = [[1 0]   C = [[1 1]   at (1,1) diag C=1 ties up C=1: the diagonal wins, path 2 cells,
    #      [1 1]]       [2 2]]  2 / 2 = 1 (preferring up would give 3 cells, 2/3)
    tie = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert dtw(tie, torch.tensor([2]), torch.tensor([2])).item() == pytest.approx(1.0)
    # d = [[0 1 0 2]   C = [[0 1 1 3]   from (2,3): up C=1 ties left C=1 (diag 2): left wins ->
    #      [1 1 1 0]        [1 1 2 1]   (2,2): diag 1 -> (1,1): diag 0 -> (0,0). 4 cells: 1/4.
    #      [2 0 0 0]]       [3 1 1 1]]  (preferring up: (1,3), (0,2), (0,1), (0,0): 1/5)
    left_up = torch.tensor([[[0.0, 1, 0, 2], [1, 1, 1, 0], [2, 0, 0, 0]]])
    assert dtw(left_up, torch.tensor([3]), torch.tensor([4])).item() == pytest.approx(0.25)
    # 1 x 3: the only path has 3 cells: (1 + 2 + 3) / 3 = 2; padding is ignored
    row = torch.tensor([[[1.0, 2.0, 3.0, 99.0], [99.0, 99.0, 99.0, 99.0]]])
    assert dtw(row, torch.tensor([1]), torch.tensor([3])).item() == pytest.approx(2.0)


@pytest.mark.parametrize("integer", [False, True])
def test_dtw_batched_equals_one_by_one_and_reference(integer):
    g = torch.Generator().manual_seed(3)
    bsz, ta, tb = 24, 7, 9
    cost = (
        torch.randint(0, 3, (bsz, ta, tb), generator=g).float()
        if integer
        else torch.rand(bsz, ta, tb, generator=g)
    )  # integer costs: many ties, exercising the path-length tie-break
    la = torch.randint(1, ta + 1, (bsz,), generator=g)
    lb = torch.randint(1, tb + 1, (bsz,), generator=g)
    out = dtw(cost, la, lb)
    padded = cost.clone()
    for k in range(bsz):
        padded[k, la[k] :] = float("nan")
        padded[k, :, lb[k] :] = float("nan")
    assert torch.equal(dtw(padded, la, lb), out)  # padding is never read into a result
    for k in range(bsz):
        sub = cost[k : k + 1, : la[k], : lb[k]]
        one = dtw(sub, la[k : k + 1], lb[k : k + 1])
        assert torch.equal(one, out[k : k + 1])
        assert out[k].item() == pytest.approx(dtw_reference(sub[0].numpy()), rel=1e-6, abs=1e-7)
    with pytest.raises(ValueError):
        dtw(cost, la * 0, lb)


# ----------------------------------------------------------------------------- ABX scores


def test_identical_a_and_x_gives_zero_error():
    feats, items = _template_set(swap=False)
    res = abx(feats, items, frame_rate=100.0)
    assert res.within == 0.0 and res.across == 0.0
    # within per (c, s, a, b) group: n_A (n_A - 1) n_B = 3 * 2 * 3; 3 contexts x 2 speakers x 2
    assert res.num_triples["within"] == 3 * 2 * 2 * 18
    # across: n_A n_X n_B = 27 per group, one X speaker
    assert res.num_triples["across"] == 3 * 2 * 2 * 27
    assert res.per_pair["within"] == {"p": {"q": 0.0}, "q": {"p": 0.0}}


def test_b_identical_to_x_gives_full_error_across():
    feats, items = _template_set(swap=True)
    res = abx(feats, items, frame_rate=100.0)
    assert res.within == 0.0  # each speaker's tokens of a phone are identical
    assert res.across == 100.0  # X of speaker s2 equals B of speaker s1 (and vice versa)


def test_random_features_give_chance():
    g = torch.Generator().manual_seed(0)
    tokens = []
    for c in range(4):
        for s in range(3):
            for p in "pqr":
                for _ in range(3):
                    n = int(torch.randint(3, 7, (1,), generator=g))
                    tokens.append((torch.randn(n, 8, generator=g), p, f"l{c}", f"r{c}", f"s{s}"))
    feats, items = _one_file_per_token(tokens)
    res = abx(feats, items, frame_rate=100.0)
    assert res.num_triples["within"] >= 500 and res.num_triples["across"] >= 500
    assert abs(res.within - 50.0) < 6.0 and abs(res.across - 50.0) < 6.0


def test_upstream_averaging_on_hand_computed_toy():
    e1, e2, v = [[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]  # one-frame tokens
    # angular distances: d(e1, e2) = 1/2, d(e1, v) = d(e2, v) = 1/4 (an exact tie), d(u, u) = 0
    tokens = [
        (e1, "p", "x", "y", "S1"), (e2, "p", "x", "y", "S1"), (v, "q", "x", "y", "S1"),
        (e1, "p", "u", "w", "S1"), (e1, "p", "u", "w", "S1"), (e1, "p", "u", "w", "S1"),
        (e2, "q", "u", "w", "S1"), (e2, "q", "u", "w", "S1"),
        (e1, "p", "x", "y", "S2"), (e1, "p", "x", "y", "S2"), (e2, "q", "x", "y", "S2"),
        (e1, "p", "u", "w", "S2"), (e2, "q", "u", "w", "S2"),
        (e2, "p", "x", "y", "S3"),
    ]  # fmt: skip
    feats, items = _one_file_per_token(tokens)
    res = abx(feats, items, frame_rate=100.0)
    # WITHIN groups (context, speaker, A phone, B phone): error, triples
    #   xy S1 p|q: X = e1: d(A = e2) 1/2 > d(B = v) 1/4, X = e2 likewise -> 1.0, 2 triples
    #   xy S1 q|p: q has one token -> no group; uw S2: both cells single -> no group
    #   uw S1 p|q: 0.0 (12 triples); uw S1 q|p: 0.0 (6); xy S2 p|q: 0.0 (2)
    # over contexts: (S1, p, q) = (1 + 0) / 2 = .5, (S1, q, p) = 0, (S2, p, q) = 0
    # over speakers: (p, q) = (.5 + 0) / 2 = .25, (q, p) = 0; over pairs: .125 -> 12.5 %
    # (a flat mean over triples would be 2/22 = 9.1 %, over groups 1/4 = 25 %)
    assert res.within == pytest.approx(12.5)
    assert res.per_pair["within"] == {"p": {"q": pytest.approx(25.0)}, "q": {"p": 0.0}}
    assert res.num_triples["within"] == 22 and res.num_groups["within"] == 4
    # ACROSS groups (context, A speaker, A|B, X speaker): error
    #   xy S1 p|q X=S2 {e1,e1}: A = e1 right, A = e2 wrong -> .5 (4 triples)
    #   xy S1 p|q X=S3 {e2}:    A = e1 wrong, A = e2 right -> .5 (2)
    #   xy S1 q|p X=S2 {e2}:    A = v: 1/4; B = e1 (1/2) right, B = e2 (0) wrong -> .5 (2)
    #   uw S1 p|q X=S2, uw S1 q|p X=S2, uw S2 p|q X=S1, uw S2 q|p X=S1: 0 (6, 6, 3, 2 triples)
    #   xy S2 p|q X=S1 {e1,e2}: X = e1 right twice, X = e2 wrong twice -> .5 (4)
    #   xy S2 p|q X=S3 {e2}:    d(e1, e2) = 1/2 > d(B = e2, e2) = 0 -> 1.0 (2)
    #   xy S2 q|p X=S1 {v}:     d(e2, v) = d(e1, v): ties count half -> .5 (2)
    #   (S3 has one phone in xy: never A)
    # over (context, X speaker): (S1,p,q) = (.5 + .5 + 0) / 3 = 1/3, (S1,q,p) = (.5 + 0) / 2,
    #   (S2,p,q) = (.5 + 1 + 0) / 3 = 1/2, (S2,q,p) = (.5 + 0) / 2
    # over speakers: (p,q) = (1/3 + 1/2) / 2 = 5/12, (q,p) = 1/4; over pairs: 1/3 -> 33.33 %
    # (flat over groups: 3.5 / 10 = 35 %; flat over triples: 9 / 33 = 27.3 %)
    assert res.across == pytest.approx(100 / 3)
    assert res.per_pair["across"]["p"]["q"] == pytest.approx(500 / 12)
    assert res.per_pair["across"]["q"]["p"] == pytest.approx(25.0)
    assert res.num_triples["across"] == 33 and res.num_groups["across"] == 10


def test_matches_naive_reference_on_generated_items():
    labels, feats, speakers = _labelled_corpus(seed=5)
    items = items_from_frame_labels(labels, speakers)
    res = abx(feats, items, frame_rate=100.0, batch_size=97)
    ref = abx_reference(feats, items, frame_rate=100.0)
    for mode in ("within", "across"):
        score = getattr(ref, mode)
        table = {(a, b): v for a, row in ref.per_pair[mode].items() for b, v in row.items()}
        assert res.num_triples[mode] > 300
        assert getattr(res, mode) == pytest.approx(score, abs=1e-9)
        flat = {(a, b): v for a, row in res.per_pair[mode].items() for b, v in row.items()}
        assert flat.keys() == table.keys()
        assert all(flat[k] == pytest.approx(table[k], abs=1e-9) for k in table)
    assert 5.0 < res.within < 45.0  # templates + noise: informative but imperfect


def test_options_callable_missing_files_and_json():
    labels, feats, speakers = _labelled_corpus(seed=1, n_files=6)
    items = items_from_frame_labels(labels, speakers)
    full = abx(feats, items, frame_rate=100.0, modes=["within"])
    assert math.isnan(full.across) and "across" not in full.num_triples
    via_fn = abx(lambda f: feats[f], items, frame_rate=100.0, modes=["within"])
    assert via_fn.to_dict() == full.to_dict()
    threads = torch.get_num_threads()
    pool = abx(feats, items, frame_rate=100.0, modes=["within"], num_threads=None)
    assert pool.to_dict() == full.to_dict() and torch.get_num_threads() == threads
    partial = {k: v for k, v in feats.items() if k != "u0"}
    missing = abx(partial, items, frame_rate=100.0, modes=["within"])
    assert missing.num_skipped - full.num_skipped == items.file.count("u0")
    data = json.loads(full.to_json())
    assert data["across"] is None and data["within"] == pytest.approx(full.within)
    both = abx(feats, items, frame_rate=100.0)
    capped = abx(feats, items, frame_rate=100.0, max_size_group=1, max_x_across=1, seed=3)
    assert capped.num_triples["within"] == 0 and math.isnan(capped.within)  # cells of 1 token
    assert 0 < capped.num_groups["across"] < both.num_groups["across"]
    assert capped.num_triples["across"] == capped.num_groups["across"]  # 1 x 1 x 1 each
    again = abx(feats, items, frame_rate=100.0, max_size_group=2, max_x_across=1, seed=3)
    assert 0 < again.num_triples["within"] < both.num_triples["within"]
    same = abx(feats, items, frame_rate=100.0, max_size_group=2, max_x_across=1, seed=3)
    assert again.to_dict() == same.to_dict()
    with pytest.raises(ValueError):
        abx(feats, items, frame_rate=100.0, modes=["any"])


def test_small_matmul_budget_splits_rectangles_without_changing_results(monkeypatch):
    labels, feats, speakers = _labelled_corpus(seed=2, n_files=9)
    items = items_from_frame_labels(labels, speakers)
    ref = abx(feats, items, frame_rate=100.0)
    monkeypatch.setattr(abx_tokens, "_CELL_BUDGET", 300)  # rows split, one rectangle a matmul
    monkeypatch.setattr(abx_groups, "_TRIPLE_BUDGET", 50)
    small = abx(feats, items, frame_rate=100.0, batch_size=7)
    assert small.to_dict() == ref.to_dict()
