"""cbr_lite.tflite_graph: two TFLite networks joined into one, and the first cut back out, without TensorFlow.

Two tiny Keras networks stand in for an embedder (image -> 4-d vector) and a head (4-d vector -> 3 scores);
the joined file must compute the head of the embedder, and the cut must compute the embedder alone.
"""

import keras
import numpy as np
import pytest

from cbr_lite.errors import CbrError
from cbr_lite.export import LiteRTModel, to_tflite
from cbr_lite.tflite_graph import count_operators, embedder_part, join


def _network(inputs: int, outputs: int, seed: int, activation=None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((inputs,))
    return keras.Model(x, keras.layers.Dense(outputs, activation=activation)(keras.layers.Dense(6, activation="relu")(x)))


@pytest.fixture(scope="module")
def networks():
    first, second = _network(5, 4, seed=0), _network(4, 3, seed=1, activation="tanh")
    return first, second, to_tflite(first), to_tflite(second)


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)


def test_the_joined_network_computes_the_second_of_the_first(networks, queries):
    first, second, first_tflite, second_tflite = networks
    joined = LiteRTModel(join(first_tflite, second_tflite))
    expected = second.predict_on_batch(first.predict_on_batch(queries))
    assert np.allclose(joined(queries), expected, atol=1e-5)
    assert count_operators(join(first_tflite, second_tflite)) == count_operators(first_tflite) + count_operators(second_tflite)


def test_the_cut_gives_back_the_first_network(networks, queries):
    first, _, first_tflite, second_tflite = networks
    joined = join(first_tflite, second_tflite)
    part = LiteRTModel(embedder_part(joined, count_operators(first_tflite), dim=4))
    assert np.allclose(part(queries), first.predict_on_batch(queries), atol=1e-5)
    assert part.output_names == ["embedding"]


def test_networks_that_do_not_fit_are_refused(networks):
    _, _, first_tflite, _ = networks
    with pytest.raises(CbrError, match="do not fit"):
        join(first_tflite, first_tflite)  # a 4-d output into a 5-d input


@pytest.mark.parametrize("embedder_ops", [0, 99, "2", None])
def test_a_cut_the_file_cannot_have_is_refused(networks, embedder_ops):
    _, _, first_tflite, second_tflite = networks
    with pytest.raises(CbrError, match="build it again"):
        embedder_part(join(first_tflite, second_tflite), embedder_ops, dim=4)


def test_a_cut_whose_embedding_is_not_the_stated_size_is_refused(networks):
    _, _, first_tflite, second_tflite = networks
    joined = join(first_tflite, second_tflite)
    with pytest.raises(CbrError, match="cannot be cut"):
        embedder_part(joined, count_operators(first_tflite), dim=7)
    with pytest.raises(CbrError, match="cannot be cut"):
        embedder_part(joined, 1, dim=4)  # inside the first network: a 6-d hidden layer crosses
