"""Statistics of superpose.report.analysis.stats on small arrays with hand-computable answers."""
import math

import numpy as np
import pytest

from superpose.report.analysis import stats


def test_identical_domains_are_fully_polysemantic():
    acts = np.random.default_rng(0).normal(size=(50, 8))
    assert stats.polysemantic_percent(acts, acts.copy()) == 100.0


def test_distinct_means_are_not_polysemantic():
    a = np.ones((10, 6))
    b = np.full((12, 6), 5.0)
    assert stats.polysemantic_percent(a, b) == 0.0


def test_polysemantic_mixed_and_all_zero_neurons():
    a = np.array([[1.0, 0.0, 1.0, 0.0]])
    b = np.array([[1.02, 0.0, 2.0, 3.0]])
    # neuron 0: 0.02/1.02 < 0.05 -> poly; neuron 1: both zero -> poly; neurons 2, 3 differ
    assert stats.polysemantic_percent(a, b) == 50.0


def test_polysemantic_shape_mismatch():
    with pytest.raises(ValueError, match="same number of neurons"):
        stats.polysemantic_percent(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="empty"):
        stats.polysemantic_percent(np.ones((0, 4)), np.ones((3, 4)))


def test_sparsity_and_mean_activation():
    assert stats.sparsity_percent(np.zeros((4, 5))) == 100.0
    assert stats.sparsity_percent(np.array([0.0, 1e-5, 0.5, -2.0])) == 50.0
    assert stats.mean_activation(np.array([[-1.0, 3.0]])) == 2.0
    with pytest.raises(ValueError):
        stats.sparsity_percent(np.array([]))


def test_mean_l2_distance_known_value():
    a = np.zeros((2, 2))
    b = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert stats.mean_l2_distance(a, b) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="same shape"):
        stats.mean_l2_distance(a, np.zeros((3, 2)))


def test_diversity_single_context_is_zero():
    acts = np.ones((30, 3))
    contexts = [[1, 2, 3]] * 30
    assert stats.neuron_diversity(acts, contexts, top_k=20) == 0.0


def test_diversity_two_groups_is_positive():
    acts = np.ones((40, 2))
    contexts = [[1, 2, 3]] * 20 + [[7, 8, 9, 9]] * 20
    value = stats.neuron_diversity(acts, contexts, top_k=40)
    assert value == pytest.approx(math.log(2))


def test_diversity_no_qualifying_neuron_and_mismatch():
    assert stats.neuron_diversity(np.zeros((5, 3)), [[1]] * 5) == 0.0
    with pytest.raises(ValueError, match="one bag per row"):
        stats.neuron_diversity(np.ones((5, 3)), [[1]] * 4)


def test_pca_trajectory_shapes_and_shared_axes():
    rng = np.random.default_rng(1)
    means = {m: rng.normal(size=(6, 16)) for m in ("base", "expert", "superposed")}
    traj = stats.pca_trajectory(means)
    assert set(traj) == set(means)
    assert all(t.shape == (6, 2) for t in traj.values())
    # jointly fitted PCA is centred on the pooled points
    assert np.allclose(np.vstack(list(traj.values())).mean(axis=0), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="hidden size"):
        stats.pca_trajectory({"a": np.ones((3, 4)), "b": np.ones((3, 5))})


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_2d_shape(method):
    points = np.random.default_rng(2).normal(size=(12, 5))
    assert stats.embed_2d(points, method=method).shape == (12, 2)


def test_distinct_n_repeated_sentence():
    k = 3
    texts = ["The cat sat on the mat"] * k  # lower-cased: the, cat, sat, on, mat -> 5 distinct of 6
    assert stats.distinct_n(texts, 1) == pytest.approx(5 / (6 * k))
    assert stats.distinct_n(texts, 2) == pytest.approx(5 / (5 * k))


def test_self_bleu_identical_and_disjoint():
    assert stats.self_bleu(["a b c d e f"] * 3) == pytest.approx(1.0)
    disjoint = ["a b c d e f", "g h i j k l", "m n o p q r"]
    assert stats.self_bleu(disjoint) < 0.05
    with pytest.raises(ValueError, match="two texts"):
        stats.self_bleu(["only one"])


def test_ngram_entropy_uniform():
    assert stats.ngram_entropy(["a b c d"], 1) == pytest.approx(math.log(4))
    assert stats.ngram_entropy(["a b c d e"], 2) == pytest.approx(math.log(4))


def test_generation_diversity_keys_and_empty():
    result = stats.generation_diversity(["one two three", "four five six"])
    assert set(result) == {"distinct_1", "distinct_2", "self_bleu", "unigram_entropy", "bigram_entropy"}
    assert result["distinct_1"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        stats.generation_diversity([])
