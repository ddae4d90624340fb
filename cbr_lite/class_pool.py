"""Training an embedder on very many identities without a weight row per identity: FFC's class pool.

An embedder is usually trained as a cosine classifier, with one weight row per training identity
(:mod:`cbr_lite.training`). At a million identities of 512-d that matrix alone is 2 GB, and its optimiser
state twice as much again. FFC (Wang et al., *An Efficient Training Approach for Very Large Scale Face
Recognition*, CVPR 2022, arXiv 2105.10375; reference code ``tiandunx/FFC``, ``ffc_ddp.py``) keeps a small
*pool* of features instead:

- a *probe* network trained by gradient descent, and a *gallery* network that is its moving average
  (momentum 0.99) and gets no gradients;
- a pool of ``capacity`` identities with two slots each, holding unit gallery features in place of the
  classifier's weight rows; a least-recently-used map says which identity owns which slot
  (:class:`LRUSlots`, :class:`ClassPool`);
- a loss (:func:`pool_loss`): a probe whose identity is in the pool gets a margin softmax against the pool;
  one whose identity is not pushes its top-k pool cosines down;
- dual batches (:func:`dual_batches`): identity pairs (one image to the probe, another image of the same
  identity to the gallery) beside random samples, so that most probes find their identity in the pool.

:func:`train_with_pool` runs the whole loop on a Keras embedder; :func:`hit_rate` replays only the sampler and
the pool, which is all the hit rate depends on.

>>> pool = ClassPool(capacity=2, dim=2)
>>> refreshed = pool.push(np.array([[1.0, 0.0], [0.0, 1.0]]), [7, 9])   # identities 7 and 9 take slots 0, 1
>>> pool.labels([9, 7, 5]).tolist()                                     # 5 is not in the pool: -1
[1, 0, -1]
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from cbr_lite.errors import CbrError

#: FFC's defaults: gallery momentum, and how many of a miss's largest pool cosines its loss pushes down
#: (the reference takes 0.02% of the pool's identities, at least 3 and at most 10: 3 below 20,000 identities).
MOMENTUM = 0.99
HARD_NEGATIVES = 3


class LRUSlots:
    """A map from identity to slot in ``[0, capacity)`` that evicts the least recently used identity.

    :meth:`get` returns an identity's slot and marks it as the most recently used; a new identity takes the
    next free slot, or, once all are taken, the slot of the identity used longest ago (which leaves the
    map). :meth:`view` looks without changing anything.

    >>> lru = LRUSlots(2)
    >>> lru.get("a"), lru.get("b"), lru.get("a"), lru.get("c")   # "c" evicts "b", the least recently used
    (0, 1, 0, 1)
    >>> "b" in lru, lru.view("b"), lru.identities()
    (False, -1, ['a', 'c'])
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise CbrError(f"a pool needs at least one identity, got capacity {capacity}")
        self.capacity = int(capacity)
        self._slots: OrderedDict = OrderedDict()   # identity -> slot, least recently used first

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, identity) -> bool:
        return identity in self._slots

    def get(self, identity) -> int:
        """The slot of ``identity``, taking one (evicting the least recently used identity) if it has none."""
        if identity in self._slots:
            self._slots.move_to_end(identity)
            return self._slots[identity]
        if len(self._slots) < self.capacity:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
        self._slots[identity] = slot
        return slot

    def view(self, identity) -> int:
        """The slot of ``identity``, or -1 when it is not in the map; nothing changes."""
        return self._slots.get(identity, -1)

    def identities(self) -> list:
        """The identities in the map, least recently used first."""
        return list(self._slots)


class ClassPool:
    """FFC's dynamic class pool: two rows of ``capacity`` unit gallery features, owned by identities.

    ``rows[0, slot]`` and ``rows[1, slot]`` hold features of the identity that owns ``slot``. A new identity
    writes its feature into row 0 (row 1 still holds the previous owner's until the identity comes back);
    an identity already in the pool writes into its two rows in turn, so the pool keeps its two latest
    features. Rows start as random unit vectors, as in the reference.

    >>> pool = ClassPool(capacity=1, dim=2)
    >>> pool.push(np.array([[1.0, 0.0]]), [3]).tolist(), pool.push(np.array([[0.0, 2.0]]), [3]).tolist()
    ([], [0])
    >>> pool.rows[:, 0].tolist()                 # both rows now hold identity 3's features (unit length)
    [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, capacity: int, dim: int, seed: int = 0):
        self.lru = LRUSlots(capacity)
        random = np.random.default_rng(seed).normal(size=(2, capacity, dim))
        self.rows = (random / np.linalg.norm(random, axis=2, keepdims=True)).astype(np.float32)
        self.next_row = np.zeros(capacity, np.int64)

    @property
    def capacity(self) -> int:
        return self.lru.capacity

    def push(self, features: np.ndarray, identities) -> np.ndarray:
        """Write the unit ``features`` of ``identities`` (one row each, in order) into their slots.

        Returns the sorted slots of the identities that were already in the pool (*refreshed*): for those
        both rows belong to the identity, which :meth:`weights` uses.
        """
        features = np.asarray(features, dtype=np.float32)
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
        refreshed = set()
        for feature, identity in zip(features, identities):
            identity = _plain(identity)
            known = identity in self.lru
            slot = self.lru.get(identity)
            if known:
                self.rows[self.next_row[slot], slot] = feature
                self.next_row[slot] ^= 1
                refreshed.add(slot)
            else:
                self.rows[0, slot] = feature
                self.next_row[slot] = 1
        return np.array(sorted(refreshed), dtype=np.int64)

    def labels(self, identities) -> np.ndarray:
        """Each identity's slot, or -1 for an identity that is not in the pool (a *miss*)."""
        return np.array([self.lru.view(_plain(identity)) for identity in identities], dtype=np.int64)

    def weights(self, refreshed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pool's two views as class weights ``(capacity, dim)``: row 0 of every slot, and row 0 with the
        ``refreshed`` slots' row 1 (the reference's ``queue[0]`` and
        ``mask * queue[1] + (1 - mask) * queue[0]``)."""
        second = self.rows[0].copy()
        second[refreshed] = self.rows[1, refreshed]
        return self.rows[0], second


def _plain(identity):
    # NumPy integers hash like Python ints, but a plain int keeps the map's contents readable.
    return int(identity) if isinstance(identity, np.integer) else identity


def pool_loss(probe, weights, labels, scale: float = 16.0, margin: float = 0.2,
              hard_negatives: int = HARD_NEGATIVES):
    """FFC's loss of unit ``probe`` features ``(b, d)`` against one or more pool views ``(capacity, d)``.

    ``labels`` are pool slots (from :meth:`ClassPool.labels`), -1 for a probe whose identity is not in the
    pool. Per view: the *hits* get CosFace's margin softmax (``scale * (cos - margin)`` at their own slot,
    cross-entropy, averaged over the hits); the *misses* get the mean of their ``hard_negatives`` largest
    pool cosines, clipped at 0 (nothing pulls them anywhere: they only move away from the identities in the
    pool). The views' losses are summed. Works on NumPy arrays and on tensors (``keras.ops``).

    With every probe a hit and one view holding all the class weights, this is exactly
    :func:`cbr_lite.training.margin_loss`: the pool takes the place of the classifier's rows.
    """
    from keras import ops

    weights = [weights] if getattr(weights, "ndim", None) == 2 else list(weights)
    labels = ops.convert_to_tensor(labels, dtype="int32")
    hit = ops.cast(labels >= 0, probe.dtype)
    hits, misses = ops.sum(hit), ops.sum(1.0 - hit)
    total = 0.0
    for view in weights:
        cosines = ops.matmul(probe, ops.transpose(ops.cast(view, probe.dtype)))
        target = ops.one_hot(ops.maximum(labels, 0), ops.shape(cosines)[1], dtype=probe.dtype)
        log_p = ops.log_softmax(scale * (cosines - margin * target), axis=1)
        cross_entropy = -ops.sum(target * log_p, axis=1)
        largest = ops.top_k(cosines, hard_negatives)[0]
        negatives = ops.mean(ops.maximum(largest, 0.0), axis=1)
        total = total + ops.sum(hit * cross_entropy) / ops.maximum(hits, 1.0)
        total = total + ops.sum((1.0 - hit) * negatives) / ops.maximum(misses, 1.0)
    return total


def dual_batches(labels, pairs: int, randoms: int, seed: int = 0):
    """Endless ``(probe_rows, gallery_rows)`` batches of row numbers into ``labels``, FFC's dual loader.

    Each batch has ``pairs + randoms`` rows on each side. The first ``pairs`` come from an *identity* loader:
    identities in a random order (a new order every pass), two different images of each (the same image twice
    for an identity with only one), one to the probe side and one to the gallery side, so these probes always
    meet their identity in the gallery batch. The other ``randoms`` come from an *instance* loader: images in
    a random order, every pass, different images on the two sides. ``pairs=0`` is plain random sampling.
    The reference pairs a whole batch of identities with half a batch of instances on each side.
    """
    labels = np.asarray(labels)
    if pairs < 0 or randoms < 0 or pairs + randoms < 1:
        raise CbrError(f"a batch needs pairs >= 0, randoms >= 0 and at least one row (got {pairs}, {randoms})")
    rng = np.random.default_rng(seed)
    identities = np.unique(labels)
    members = [np.flatnonzero(labels == identity) for identity in identities]
    identity_order, identity_at = rng.permutation(len(identities)), 0
    image_order, image_at = rng.permutation(len(labels)), 0
    while True:
        probe_rows, gallery_rows = [], []
        for _ in range(pairs):
            if identity_at == len(identity_order):
                identity_order, identity_at = rng.permutation(len(identities)), 0
            rows = members[identity_order[identity_at]]
            identity_at += 1
            first, second = rng.choice(rows, 2, replace=False) if len(rows) > 1 else (rows[0], rows[0])
            probe_rows.append(first)
            gallery_rows.append(second)
        if image_at + 2 * randoms > len(image_order):
            image_order, image_at = rng.permutation(len(labels)), 0
        instances = image_order[image_at:image_at + 2 * randoms]
        image_at += 2 * randoms
        yield (np.array(probe_rows + list(instances[:randoms]), dtype=np.int64),
               np.array(gallery_rows + list(instances[randoms:]), dtype=np.int64))


def hit_rate(labels, capacity: int, steps: int, pairs: int, randoms: int, seed: int = 0,
             skip: int = 0) -> float:
    """The fraction of probes whose identity is in the pool when the loss is computed (after the gallery
    batch was pushed), over ``steps`` batches of :func:`dual_batches`, not counting the first ``skip``.

    It depends only on the sampler and the pool's map, not on any feature: this replays exactly the batches
    :func:`train_with_pool` draws with the same arguments and ``seed``.
    """
    labels = np.asarray(labels)
    lru = LRUSlots(capacity)
    batches = dual_batches(labels, pairs, randoms, seed)
    found = seen = 0
    for step in range(steps):
        probe_rows, gallery_rows = next(batches)
        for identity in labels[gallery_rows]:
            lru.get(_plain(identity))
        if step >= skip:
            found += sum(_plain(identity) in lru for identity in labels[probe_rows])
            seen += len(probe_rows)
    return found / max(seen, 1)


def train_with_pool(probe, images: np.ndarray, labels, capacity: int, steps: int, pairs: int = 16,
                    randoms: int = 16, learning_rate: float = 2e-3, momentum: float = MOMENTUM,
                    scale: float = 16.0, margin: float = 0.2, hard_negatives: int = HARD_NEGATIVES,
                    seed: int = 0) -> dict:
    """Train the Keras embedder ``probe`` in place with FFC's class pool; return the history.

    ``images`` are the network's float inputs, ``labels`` their identities. Each step: the gallery network
    (a copy of the probe at the start, never given a gradient) moves towards the probe (``gallery = momentum
    * gallery + (1 - momentum) * probe``, every trainable weight), embeds the gallery side of a
    :func:`dual_batches` batch, and its unit features are pushed into a :class:`ClassPool` of ``capacity``
    identities; then the probe side is embedded with gradients and one Adam step lowers :func:`pool_loss`
    against the pool's two views. (The reference also swaps the two sides within each step, undoing the
    first pass's pool writes; here each step runs one direction.)

    Returns ``{"loss": [...], "hits": [...], "gallery": model, "pool": ClassPool}``: each step's loss and
    fraction of probes that were hits, then the gallery network and the pool as training left them.
    """
    import keras
    import tensorflow as tf

    labels = np.asarray(labels)
    gallery = keras.models.clone_model(probe)
    gallery.set_weights(probe.get_weights())
    pool = ClassPool(capacity, probe.output_shape[-1], seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    scale, margin = float(scale), float(margin)

    @tf.function(reduce_retracing=True)
    def follow_and_embed(pixels):
        for average, weight in zip(gallery.trainable_weights, probe.trainable_weights):
            average.assign(momentum * average + (1.0 - momentum) * weight)
        # Batch statistics in BatchNormalization, as the reference's gallery runs in training mode.
        return gallery(pixels, training=True)

    @tf.function(reduce_retracing=True)
    def learn(pixels, first, second, slots):
        with tf.GradientTape() as tape:
            unit = tf.math.l2_normalize(probe(pixels, training=True), axis=1)
            loss = pool_loss(unit, (first, second), slots, scale, margin, hard_negatives)
        gradients = tape.gradient(loss, probe.trainable_variables)
        optimizer.apply_gradients(zip(gradients, probe.trainable_variables))
        return loss

    history = {"loss": [], "hits": []}
    batches = dual_batches(labels, pairs, randoms, seed)
    for _ in range(steps):
        probe_rows, gallery_rows = next(batches)
        features = follow_and_embed(images[gallery_rows]).numpy()
        refreshed = pool.push(features, labels[gallery_rows])
        slots = pool.labels(labels[probe_rows])
        first, second = pool.weights(refreshed)
        history["loss"].append(float(learn(images[probe_rows], first, second, slots)))
        history["hits"].append(float(np.mean(slots >= 0)))
    history["gallery"] = gallery
    history["pool"] = pool
    return history


def train_with_classifier(probe, images: np.ndarray, labels, steps: int, batch_size: int = 32,
                          learning_rate: float = 2e-3, scale: float = 16.0, margin: float = 0.2,
                          seed: int = 0) -> dict:
    """The baseline: train ``probe`` in place as a full cosine classifier, one weight row per identity.

    The rows are a trainable ``(identities, dim)`` matrix, normalised before use, and the loss is
    :func:`pool_loss` with that matrix as the only view and every image a hit: CosFace. Batches are the
    probe side of ``dual_batches(labels, 0, batch_size, seed)`` (random images), and the optimiser is the same
    Adam as :func:`train_with_pool`'s. Returns ``{"loss": [...], "rows": the weight matrix}``.
    """
    import keras
    import tensorflow as tf

    labels = np.asarray(labels)
    identities = np.unique(labels)
    classes = np.searchsorted(identities, labels)
    start = np.random.default_rng(seed).normal(0.0, 0.05, (len(identities), probe.output_shape[-1]))
    rows = keras.Variable(start.astype(np.float32), name="class_rows")
    optimizer = keras.optimizers.Adam(learning_rate)
    variables = [*probe.trainable_variables, rows]
    scale, margin = float(scale), float(margin)

    @tf.function(reduce_retracing=True)
    def learn(pixels, targets):
        with tf.GradientTape() as tape:
            unit = tf.math.l2_normalize(probe(pixels, training=True), axis=1)
            loss = pool_loss(unit, tf.math.l2_normalize(rows, axis=1), targets, scale, margin)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    history = {"loss": []}
    batches = dual_batches(labels, 0, batch_size, seed)
    for _ in range(steps):
        batch, _ = next(batches)
        history["loss"].append(float(learn(images[batch], classes[batch])))
    history["rows"] = rows
    return history
