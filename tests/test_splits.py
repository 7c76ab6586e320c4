import json
import random
from collections import Counter

import pytest

from one_shui.data.splits import (
    MIN_IMAGES_SINGLE,
    Split,
    SplitMismatchError,
    make_split,
    pools,
    shadow_half,
    shadow_pool,
    shadow_rows,
    simulated_requests,
)


def listing(n_ids=400, seed=0, counts=None):
    """An in-memory dataset listing: long-tailed images per identity."""
    rng = random.Random(seed)
    counts = counts or [min(2 + int(rng.expovariate(1 / 8)), 40) for _ in range(n_ids)]
    files, identities = [], []
    for person, n in enumerate(counts):
        for _ in range(n):
            files.append(f"{len(files)}.jpg")
            identities.append(f"p{person}")
    return files, identities


def split_of(files, identities, seed=0, n=20):
    return make_split(files, identities, dataset="toy", dataset_fingerprint="fp", seed=seed, request_size=n)


def test_no_identity_in_two_splits_and_all_covered():
    files, ids = listing()
    split = split_of(files, ids)
    groups = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(g) for g in groups) == len(set(ids))
    assert set.union(*groups) == set(ids)
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert set(split.forget) <= groups[0] and not set(split.forget) & set(split.retain)
    assert set(split.forget) | set(split.retain) == groups[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_shares_close_to_60_20_20(seed):
    files, ids = listing(seed=seed)
    split = split_of(files, ids, seed=seed)
    per = Counter(ids)
    share = {
        name: sum(per[i] for i in getattr(split, name)) / len(files) for name in ("train", "val", "test")
    }
    assert share["train"] == pytest.approx(0.6, abs=0.03)
    assert share["val"] == pytest.approx(0.2, abs=0.03)
    assert share["test"] == pytest.approx(0.2, abs=0.03)


def test_support_images_are_in_no_training_pool():
    files, ids = listing()
    split = split_of(files, ids)
    rows = pools(split, files, ids)
    support_rows = {files.index(name) for name in split.support.values()}
    assert set(rows["support"]) == support_rows
    assert len(rows["support"]) == len(split.forget) == 20
    for pool in ("train", "retain", "forget"):
        assert not support_rows & set(rows[pool])
    # one support image per forget identity, and it is that identity's image
    assert sorted(ids[r] for r in rows["support"]) == sorted(split.forget)
    assert all(ids[files.index(f)] == i for i, f in split.support.items())
    # D_f is every other image of the forget identities; train = retain + forget
    assert len(rows["forget"]) == sum(Counter(ids)[i] for i in split.forget) - 20
    assert sorted(rows["train"]) == sorted(rows["retain"] + rows["forget"])
    assert {ids[r] for r in rows["val"]} == set(split.val)


def test_single_identity_request_needs_six_images_and_pairs_need_two():
    # Only a few identities have 6+ images; everyone else has 2 or fewer.
    counts = [7, 6, 8] * 5 + [5] * 30 + [2] * 60 + [1] * 60
    files, ids = listing(counts=counts)
    for seed in range(8):
        split = split_of(files, ids, seed=seed, n=1)
        (identity,) = split.forget
        assert Counter(ids)[identity] >= MIN_IMAGES_SINGLE
        many = split_of(files, ids, seed=seed, n=10)
        assert all(Counter(ids)[i] >= 2 for i in many.forget)


def test_request_larger_than_eligible_identities_is_refused():
    files, ids = listing(counts=[2] * 10 + [1] * 30)
    with pytest.raises(ValueError, match="eligible"):
        split_of(files, ids, n=10)


def test_same_seed_same_split_other_seed_other_split():
    files, ids = listing()
    assert split_of(files, ids, seed=3).to_dict() == split_of(files, ids, seed=3).to_dict()
    a, b = split_of(files, ids, seed=3), split_of(files, ids, seed=4)
    assert a.train != b.train and a.forget != b.forget


def test_request_size_does_not_move_the_partition():
    files, ids = listing()
    a, b = split_of(files, ids, n=5), split_of(files, ids, n=50)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.fingerprint != b.fingerprint


def test_simulated_requests_cover_train_and_wrap_round():
    files, ids = listing()
    split = split_of(files, ids)
    real_support = set(split.support.values())
    train_counts = Counter(ids[r] for r in pools(split, files, ids)["train"])
    eligible = set(train_counts)  # single-image identities included, as in the published code
    assert min(train_counts.values()) == 1, "the fixture must hold single-image TRAIN identities"
    size = 7
    assert len(eligible) % size, "the fixture must leave a short last chunk"
    requests = simulated_requests(split, files, ids, size=size, epoch=0)
    assert all(len(r.identities) == size == len(r.support) for r in requests)
    seen = [i for r in requests for i in r.identities]
    assert set(seen) == eligible
    # the last chunk is topped up from the start of the epoch's order
    wrapped = len(requests) * size - len(eligible)
    assert 0 < wrapped < size
    assert requests[-1].identities[-wrapped:] == requests[0].identities[:wrapped]
    for request in requests:
        support, forget = set(request.support), set(request.forget)
        assert not support & forget
        assert not {files[r] for r in support | forget} & real_support
        assert {ids[r] for r in support} == set(request.identities)
        assert {ids[r] for r in forget} == {i for i in request.identities if train_counts[i] > 1}
        assert len(forget) == sum(train_counts[i] for i in request.identities) - size


def test_a_simulated_request_with_nothing_to_forget_is_left_out():
    """People with one image each take part, but a request made of them alone has no forget image."""
    files, ids = listing(n_ids=200, counts=[1] * 150 + [8] * 50)
    split = split_of(files, ids, n=5)
    train_counts = Counter(ids[r] for r in pools(split, files, ids)["train"])
    requests = simulated_requests(split, files, ids, size=1, epoch=0)
    assert all(request.forget for request in requests)
    assert len(requests) == sum(1 for n in train_counts.values() if n > 1)


def test_simulated_requests_are_deterministic_per_epoch():
    files, ids = listing()
    split = split_of(files, ids)
    first = simulated_requests(split, files, ids, size=10, epoch=0)
    assert first == simulated_requests(split, files, ids, size=10, epoch=0)
    assert first != simulated_requests(split, files, ids, size=10, epoch=1)
    # the split's seed by default; another seed (the bench's unlearning seeds) draws other requests
    assert first == simulated_requests(split, files, ids, size=10, epoch=0, seed=split.seed)
    assert first != simulated_requests(split, files, ids, size=10, epoch=0, seed=split.seed + 1000)
    with pytest.raises(ValueError, match="simulated request size"):
        simulated_requests(split, files, ids, size=10_000, epoch=0)


def test_split_json_round_trip_and_tamper_detection(tmp_path):
    files, ids = listing()
    split = split_of(files, ids)
    path = split.save(tmp_path / "split.json")
    assert Split.load(path) == split
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    record = json.loads(path.read_text())
    record["forget"][0] = record["retain"][0] if "retain" in record else split.retain[0]
    path.write_text(json.dumps(record))
    with pytest.raises(SplitMismatchError, match="fingerprint"):
        Split.load(path)
    path.write_text("{not json")
    with pytest.raises(SplitMismatchError, match="not valid JSON"):
        Split.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Split.load(tmp_path / "missing.json")


def test_verify_refuses_other_dataset():
    files, ids = listing()
    split = split_of(files, ids)
    split.verify("toy", "fp")
    with pytest.raises(SplitMismatchError, match="made for dataset 'toy'"):
        split.verify("toy", "another-listing")
    with pytest.raises(SplitMismatchError, match="'celebahq'"):
        split.verify("celebahq", "fp")


def test_each_person_of_the_shadow_pool_is_in_half_of_the_shadows_and_more_shadows_keep_the_first():
    files, ids = listing()
    split = split_of(files, ids)
    pool = shadow_pool(split)
    assert set(pool) == {*split.forget, *split.test} and not set(pool) & {*split.val, *split.retain}
    halves = [shadow_half(split, k) for k in range(8)]
    for j in range(4):  # a pair: one half of the pool, then the other
        assert halves[2 * j] | halves[2 * j + 1] == set(pool) and not halves[2 * j] & halves[2 * j + 1]
    assert Counter(person for half in halves for person in half) == dict.fromkeys(pool, 4)
    assert len({frozenset(half) for half in halves}) == 8  # each pair draws anew
    assert [shadow_half(split, k) for k in range(4)] == halves[:4]  # deterministic
    assert shadow_half(split_of(files, ids, seed=1), 0) != halves[0]


def test_a_shadow_trains_on_the_retain_pool_and_the_photos_of_its_half():
    files, ids = listing()
    split = split_of(files, ids)
    rows, half = pools(split, files, ids), shadow_half(split, 3)
    trained = shadow_rows(split, files, ids, 3)
    assert trained == sorted(trained) and set(rows["retain"]) <= set(trained)
    extra = [row for row in trained if row not in set(rows["retain"])]
    assert {ids[row] for row in extra} == half
    assert set(extra) == {row for pool in ("forget", "test") for row in rows[pool] if ids[row] in half}
    assert not set(trained) & {*rows["support"], *rows["val"]}  # no portrait, no VAL photo
