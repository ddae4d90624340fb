"""Tests for cbr_lite.class_pool: FFC's LRU map, two-slot pool, loss, dual loader and training loops."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from cbr_lite import class_pool
from cbr_lite.errors import CbrError


def _reference_lru(sequence, capacity):
    """Slots handed out by a list-based LRU (most recent last), the obvious way."""
    order, slot_of, slots = [], {}, []
    for identity in sequence:
        if identity in slot_of:
            order.remove(identity)
        elif len(order) < capacity:
            slot_of[identity] = len(order)
        else:
            oldest = order.pop(0)
            slot_of[identity] = slot_of.pop(oldest)
        order.append(identity)
        slots.append(slot_of[identity])
    return slots, order


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_lru_evicts_the_least_recently_used_identity():
    lru = class_pool.LRUSlots(2)
    assert [lru.get("a"), lru.get("b"), lru.get("a"), lru.get("c")] == [0, 1, 0, 1]
    assert "b" not in lru and lru.view("b") == -1 and lru.view("a") == 0
    assert lru.identities() == ["a", "c"] and len(lru) == 2
    lru.view("a")                      # looking does not count as a use
    assert lru.get("d") == 0 and lru.identities() == ["c", "d"]


def test_lru_agrees_with_a_list_based_reference():
    sequence = np.random.default_rng(0).integers(0, 30, 500).tolist()
    lru = class_pool.LRUSlots(12)
    expected, order = _reference_lru(sequence, 12)
    assert [lru.get(identity) for identity in sequence] == expected
    assert lru.identities() == order


def test_lru_needs_room_for_one_identity():
    with pytest.raises(CbrError, match="at least one identity"):
        class_pool.LRUSlots(0)


def test_pool_writes_new_identities_to_row_0_and_alternates_rows_for_known_ones():
    pool = class_pool.ClassPool(capacity=2, dim=2, seed=3)
    start = pool.rows.copy()
    assert np.allclose(np.linalg.norm(start, axis=2), 1.0)
    assert pool.push([[2.0, 0.0], [0.0, 3.0]], [np.int64(7), 8]).tolist() == []
    np.testing.assert_allclose(pool.rows[0], [[1, 0], [0, 1]], atol=1e-7)
    np.testing.assert_array_equal(pool.rows[1], start[1])          # row 1: still the random start
    assert pool.push([[1.0, 1.0]], [7]).tolist() == [0]             # known: row 1, refreshed
    np.testing.assert_allclose(pool.rows[1, 0], _unit([1, 1]), atol=1e-7)
    assert pool.push([[-1.0, 0.0]], [7]).tolist() == [0]            # and back to row 0
    np.testing.assert_allclose(pool.rows[0, 0], [-1, 0], atol=1e-7)
    assert pool.lru.identities() == [8, 7] and pool.capacity == 2


def test_pool_labels_and_views():
    pool = class_pool.ClassPool(capacity=2, dim=2)
    pool.push([[1.0, 0.0], [0.0, 1.0]], [7, 8])
    refreshed = pool.push([[1.0, 1.0], [-1.0, 0.0]], [7, 9])     # 7 refreshed; 9 evicts 8 (least recent)
    assert refreshed.tolist() == [0]
    assert pool.labels([7, 8, 9]).tolist() == [0, -1, 1]
    first, second = pool.weights(refreshed)
    np.testing.assert_allclose(first, [[1, 0], [-1, 0]], atol=1e-7)
    np.testing.assert_allclose(second, [_unit([1, 1]), [-1, 0]], atol=1e-7)


def _loss_by_hand(probe, views, labels, scale=16.0, margin=0.2, k=3):
    hit, total = labels >= 0, 0.0
    for view in views:
        cosines = probe @ view.T
        logits = scale * cosines
        logits[hit, labels[hit]] -= scale * margin
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        if hit.any():
            total += -log_p[hit, labels[hit]].mean()
        if (~hit).any():
            total += np.clip(np.sort(cosines[~hit], axis=1)[:, -k:], 0, None).mean()
    return total


def test_pool_loss_agrees_with_numpy_for_hits_and_misses():
    rng = np.random.default_rng(1)
    probe = _unit(rng.normal(size=(6, 8)))
    views = [_unit(rng.normal(size=(5, 8))) for _ in range(2)]
    labels = np.array([0, 4, -1, 2, -1, 2])
    loss = float(class_pool.pool_loss(probe.astype(np.float32), [v.astype(np.float32) for v in views], labels))
    assert loss == pytest.approx(_loss_by_hand(probe, views, labels), rel=1e-5)


def test_pool_loss_with_all_rows_and_every_probe_a_hit_is_cosface():
    rng = np.random.default_rng(2)
    probe, rows = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(10, 8)))
    labels = np.array([3, 3, 0, 9])
    logits = 16.0 * (probe @ rows.T)
    logits[np.arange(4), labels] -= 16.0 * 0.2
    cosface = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(4), labels])
    loss = float(class_pool.pool_loss(probe.astype(np.float32), rows.astype(np.float32), labels))
    assert loss == pytest.approx(cosface, rel=1e-5)


def test_a_miss_far_from_the_pool_costs_nothing():
    pool_rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]], np.float32)
    far = np.array([[-0.6, -0.8]], np.float32)          # negative cosine to every slot
    assert float(class_pool.pool_loss(far, pool_rows, [-1])) == 0.0
    near = np.array([[0.6, 0.8]], np.float32)
    expected = np.mean(np.sort(near @ pool_rows.T, axis=1)[0, -3:])
    assert float(class_pool.pool_loss(near, pool_rows, [-1])) == pytest.approx(expected, rel=1e-5)


def test_dual_batches_pair_identities_and_draw_random_images():
    labels = np.repeat(np.arange(10), 3)
    batches = class_pool.dual_batches(labels, pairs=4, randoms=3, seed=0)
    paired = []
    for _ in range(5):
        probe_rows, gallery_rows = next(batches)
        assert len(probe_rows) == len(gallery_rows) == 7
        np.testing.assert_array_equal(labels[probe_rows[:4]], labels[gallery_rows[:4]])
        assert np.all(probe_rows[:4] != gallery_rows[:4])          # two different images of one identity
        assert not set(probe_rows[4:]) & set(gallery_rows[4:])     # random images differ between the sides
        paired.extend(labels[probe_rows[:4]])
    assert sorted(paired[:8]) == sorted(set(paired[:8])) and set(paired[:12]) >= set(range(10))
    again = class_pool.dual_batches(labels, pairs=4, randoms=3, seed=0)
    first = next(again)
    np.testing.assert_array_equal(first[0], next(class_pool.dual_batches(labels, 4, 3, seed=0))[0])


def test_dual_batches_single_image_identities_and_plain_random_batches():
    labels = np.array([0, 1, 1, 2, 2])
    probe_rows, gallery_rows = next(class_pool.dual_batches(labels, pairs=3, randoms=0, seed=1))
    for p, g in zip(probe_rows, gallery_rows):
        assert labels[p] == labels[g] and (p != g or labels[p] == 0)
    probe_rows, gallery_rows = next(class_pool.dual_batches(labels, pairs=0, randoms=2, seed=1))
    assert len(set(probe_rows) | set(gallery_rows)) == 4
    with pytest.raises(CbrError, match="pairs >= 0"):
        next(class_pool.dual_batches(labels, pairs=0, randoms=0))


def test_hit_rate_pairs_always_hit_and_a_pool_below_a_batch_collapses():
    labels = np.repeat(np.arange(100), 4)
    only_pairs = class_pool.hit_rate(labels, capacity=10, steps=50, pairs=8, randoms=0)
    assert only_pairs == 1.0
    dual = class_pool.hit_rate(labels, capacity=20, steps=200, pairs=8, randoms=8)
    random = class_pool.hit_rate(labels, capacity=20, steps=200, pairs=0, randoms=16)
    assert 0.5 <= dual < 0.7 and random < 0.3
    assert class_pool.hit_rate(labels, capacity=4, steps=50, pairs=8, randoms=8) < 0.1
    everyone = class_pool.hit_rate(labels, capacity=100, steps=100, pairs=8, randoms=8, skip=50)
    assert everyone == 1.0


def _tiny_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(hidden))


def _data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 3)
    return rng.normal(size=(36, 6)).astype(np.float32), labels


def test_train_with_pool_moves_the_gallery_towards_the_probe_and_replays_the_hit_rate():
    images, labels = _data()
    probe = _tiny_model()
    start = [w.copy() for w in probe.get_weights()]
    run = class_pool.train_with_pool(probe, images, labels, capacity=6, steps=4, pairs=2, randoms=2)
    assert len(run["loss"]) == len(run["hits"]) == 4 and np.all(np.isfinite(run["loss"]))
    assert np.mean(run["hits"]) == pytest.approx(class_pool.hit_rate(labels, 6, 4, 2, 2), abs=1e-12)
    assert len(run["pool"].lru) == 6
    for initial, trained, averaged in zip(start, probe.get_weights(), run["gallery"].get_weights()):
        assert not np.array_equal(initial, trained)
        # The gallery lags: it moved from the start, but only a little of the way to the probe.
        assert np.abs(averaged - initial).max() < np.abs(trained - initial).max()


def test_train_with_classifier_trains_probe_and_rows():
    images, labels = _data()
    probe = _tiny_model()
    start = probe.get_weights()[0].copy()
    run = class_pool.train_with_classifier(probe, images, labels, steps=3, batch_size=8)
    assert len(run["loss"]) == 3 and np.all(np.isfinite(run["loss"]))
    assert tuple(run["rows"].shape) == (12, 4)
    assert not np.array_equal(start, probe.get_weights()[0])
