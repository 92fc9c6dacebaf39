"""Statistics behind the paper's analyses, on plain numpy arrays so they run without any model.

Activations are `(N, D)` arrays: N tokens (rows) by D neurons / hidden dimensions (columns).
Every function checks its inputs and raises `ValueError` with a readable message on empty
inputs or mismatched shapes, because silent broadcasting would give plausible but wrong numbers.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

__all__ = [
    "polysemantic_percent",
    "polysemantic_percent_across",
    "sparsity_percent",
    "neuron_diversity",
    "mean_activation",
    "mean_l2_distance",
    "pca_trajectory",
    "embed_2d",
    "distinct_n",
    "self_bleu",
    "ngram_entropy",
    "generation_diversity",
]


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------

def _as_2d(acts: np.ndarray, name: str) -> np.ndarray:
    """Float `(N, D)` view of `acts`, or a ValueError naming the argument."""
    arr = np.asarray(acts, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (tokens, neurons) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr


def _entropy(counts: Sequence[int] | np.ndarray) -> float:
    """Shannon entropy in nats of a frequency distribution (zero counts ignored)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------
# activation statistics
# ---------------------------------------------------------------------------

def polysemantic_percent(acts_a: np.ndarray, acts_b: np.ndarray, threshold: float = 0.05) -> float:
    """Percent of neurons whose mean activation barely differs between two domains.

    A neuron that fires about equally on both domains serves both, i.e. it is polysemantic. Per
    neuron, with mean activations mu_a and mu_b over the tokens of each domain, the normalised
    difference |mu_a - mu_b| / max(|mu_a|, |mu_b|) must be below `threshold`.
    A neuron with both means exactly 0 counts as polysemantic: it does not separate the domains
    (and the ratio 0/0 would otherwise be undefined).
    """
    a = _as_2d(acts_a, "acts_a")  # (Na, D)
    b = _as_2d(acts_b, "acts_b")  # (Nb, D)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"acts_a and acts_b must have the same number of neurons, got {a.shape[1]} and {b.shape[1]}")
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    mu_a = a.mean(axis=0)  # (D,)
    mu_b = b.mean(axis=0)  # (D,)
    denom = np.maximum(np.abs(mu_a), np.abs(mu_b))  # (D,)
    both_zero = denom == 0
    ratio = np.abs(mu_a - mu_b) / np.where(both_zero, 1.0, denom)  # (D,)
    poly = both_zero | (ratio < threshold)
    return float(100.0 * poly.mean())


def polysemantic_percent_across(acts_by_domain: Sequence[np.ndarray], threshold: float = 0.05) -> float:
    """Percent of neurons whose mean activation barely differs across several domains (two or more).

    The spread of the per-domain means, (max mu - min mu) / max |mu|, must be below `threshold`; with
    two domains this is exactly `polysemantic_percent`, so runs with several experts read the same way.
    """
    if len(acts_by_domain) < 2:
        raise ValueError(f"polysemantic neurons need at least two domains, got {len(acts_by_domain)}")
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    arrays = [_as_2d(a, f"acts_by_domain[{i}]") for i, a in enumerate(acts_by_domain)]  # (N_k, D) each
    if len({a.shape[1] for a in arrays}) != 1:
        raise ValueError(f"every domain needs the same number of neurons, got {[a.shape[1] for a in arrays]}")
    mu = np.stack([a.mean(axis=0) for a in arrays])  # (K, D)
    denom = np.abs(mu).max(axis=0)  # (D,)
    both_zero = denom == 0
    ratio = (mu.max(axis=0) - mu.min(axis=0)) / np.where(both_zero, 1.0, denom)  # (D,)
    poly = both_zero | (ratio < threshold)
    return float(100.0 * poly.mean())


def sparsity_percent(acts: np.ndarray, eps: float = 1e-4) -> float:
    """Percent of activations with |a| < eps: how much of the layer is effectively silent."""
    arr = np.asarray(acts, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("acts is empty")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    return float(100.0 * (np.abs(arr) < eps).mean())


def mean_activation(acts: np.ndarray) -> float:
    """Mean absolute activation, mean(|a|) over all tokens and neurons.

    Absolute values are used because hidden-state dimensions are signed: a plain mean would let
    positive and negative activity cancel and hide how strongly the layer responds.
    """
    arr = np.asarray(acts, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("acts is empty")
    return float(np.abs(arr).mean())


def mean_l2_distance(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """Mean over tokens of ||h_a - h_b||_2: how far two models' representations of the same tokens lie apart."""
    a = _as_2d(h_a, "h_a")  # (N, D)
    b = _as_2d(h_b, "h_b")  # (N, D)
    if a.shape != b.shape:
        raise ValueError(f"h_a and h_b must have the same shape, got {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b, axis=1).mean())


# ---------------------------------------------------------------------------
# neuron diversity
# ---------------------------------------------------------------------------

def _bag_matrix(contexts: Sequence[Sequence[int]]) -> sparse.csr_matrix:
    """Sparse `(len(contexts), V)` count matrix of token ids, V = distinct ids in these contexts."""
    vocab: dict[int, int] = {}
    rows, cols, vals = [], [], []
    for r, bag in enumerate(contexts):
        for token, count in Counter(int(t) for t in bag).items():
            rows.append(r)
            cols.append(vocab.setdefault(token, len(vocab)))
            vals.append(count)
    shape = (len(contexts), max(len(vocab), 1))
    return sparse.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=shape)


def _context_entropy(contexts: Sequence[Sequence[int]], n_clusters: int, seed: int) -> float:
    """Entropy (nats) of the cluster sizes after clustering bag-of-token contexts with MiniBatchKMeans."""
    distinct = {tuple(sorted(Counter(int(t) for t in bag).items())) for bag in contexts}
    k = min(n_clusters, len(distinct))
    if k <= 1:
        return 0.0
    # Rows are L2-normalised so clusters group contexts by which tokens they hold, not by their length.
    x = normalize(_bag_matrix(contexts))  # (n_contexts, V)
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=max(256, x.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny inputs is expected and harmless
        labels = km.fit_predict(x)  # (n_contexts,)
    return _entropy(np.bincount(labels, minlength=k))


def neuron_diversity(
    acts: np.ndarray,
    contexts: Sequence[Sequence[int]],
    min_mean_abs: float = 0.1,
    top_k: int = 100,
    n_clusters: int = 5,
    seed: int = 0,
    max_neurons: int = 64,
) -> float:
    """Mean entropy of the contexts that most excite each active neuron.

    A neuron whose strongest activations come from many kinds of context (high entropy of the
    cluster-size distribution) is diverse; one that only fires in one kind of context scores 0.
    Row i of `acts` `(N, D)` is the activation at a token whose context is the bag of token ids
    `contexts[i]`.

    Neurons qualify when their mean |activation| over all tokens is at least `min_mean_abs`; only
    the `max_neurons` qualifying neurons with the highest mean |activation| are scored (ties go to
    the lower index) so the cost stays bounded. For each, the `top_k` rows with the largest
    |activation| (sign ignored, since hidden dimensions are signed) are clustered into
    min(`n_clusters`, distinct contexts) clusters. Returns 0.0 when no neuron qualifies: a layer
    with no active neuron shows no diversity.
    """
    arr = _as_2d(acts, "acts")  # (N, D)
    if len(contexts) != arr.shape[0]:
        raise ValueError(f"contexts must hold one bag per row of acts: {len(contexts)} bags for {arr.shape[0]} rows")
    if top_k < 1 or n_clusters < 1 or max_neurons < 1:
        raise ValueError("top_k, n_clusters and max_neurons must all be at least 1")
    magnitude = np.abs(arr)  # (N, D)
    strength = magnitude.mean(axis=0)  # (D,)
    qualifying = np.flatnonzero(strength >= min_mean_abs)  # (Q,)
    if qualifying.size == 0:
        return 0.0
    order = np.argsort(-strength[qualifying], kind="stable")  # strongest first, ties by index
    chosen = qualifying[order[:max_neurons]]
    entropies = []
    # Each clustering is tiny (top_k rows): one thread avoids OpenMP start-up costs that otherwise
    # make it ~50x slower on a busy machine. sklearn is imported at module level so its OpenMP
    # runtime is already loaded, and hence limited, when threadpool_limits runs.
    with threadpool_limits(limits=1):
        for neuron in chosen:
            top_rows = np.argsort(-magnitude[:, neuron], kind="stable")[:top_k]  # (min(top_k, N),)
            entropies.append(_context_entropy([contexts[r] for r in top_rows], n_clusters, seed))
    return float(np.mean(entropies))


# ---------------------------------------------------------------------------
# low-dimensional views
# ---------------------------------------------------------------------------

def _pad_to_2(points: np.ndarray) -> np.ndarray:
    """`(N, k)` with k <= 2 padded with zero columns to `(N, 2)`, for degenerate inputs."""
    if points.shape[1] >= 2:
        return points[:, :2]
    return np.hstack([points, np.zeros((points.shape[0], 2 - points.shape[1]))])


def pca_trajectory(means_per_layer: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Project each model's per-layer mean hidden state `(L, D)` to `(L, 2)` with one shared PCA.

    The PCA is fitted on all series together, so the trajectories of base, expert and superposed
    models share axes and can be compared in one plot.
    """
    if not means_per_layer:
        raise ValueError("means_per_layer is empty")
    series = {name: _as_2d(m, f"means_per_layer[{name!r}]") for name, m in means_per_layer.items()}
    dims = {m.shape[1] for m in series.values()}
    if len(dims) != 1:
        raise ValueError(f"all series must share the hidden size, got sizes {sorted(dims)}")
    stacked = np.vstack(list(series.values()))  # (sum L, D)
    if stacked.shape[0] < 2:  # a single point has no spread to project: place it at the origin
        projected = np.zeros((stacked.shape[0], 2))
    else:
        n_comp = min(2, stacked.shape[0], stacked.shape[1])
        projected = _pad_to_2(PCA(n_components=n_comp).fit_transform(stacked))  # (sum L, 2)
    out, start = {}, 0
    for name, m in series.items():
        out[name] = projected[start:start + m.shape[0]]  # (L, 2)
        start += m.shape[0]
    return out


def embed_2d(points: np.ndarray, method: str = "tsne", seed: int = 0, n_threads: int | None = 1) -> np.ndarray:
    """2-D embedding `(N, 2)` of `points` `(N, D)` with t-SNE or PCA, for scatter plots.

    t-SNE perplexity is min(30, (N - 1) / 3), at least 1, so it always stays below N as sklearn
    requires. A single point maps to the origin. `n_threads` caps OpenMP/BLAS threads (None = library
    default): on a shared or busy machine one thread was ~9x faster than the default for t-SNE.
    """
    x = _as_2d(points, "points")  # (N, D)
    if method not in ("tsne", "pca"):
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    n = x.shape[0]
    if n == 1:
        return np.zeros((1, 2))
    with threadpool_limits(limits=n_threads):
        if method == "pca":
            return _pad_to_2(PCA(n_components=min(2, n, x.shape[1])).fit_transform(x))
        perplexity = max(1.0, min(30.0, (n - 1) / 3.0))
        init = "pca" if x.shape[1] >= 2 else "random"
        return TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(x)  # (N, 2)


# ---------------------------------------------------------------------------
# generation diversity
# ---------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    """Lower-cased whitespace tokens: a tokenizer-independent view of generated text."""
    return text.lower().split()


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not a single string")
    if len(texts) == 0:
        raise ValueError("texts is empty")


def _all_ngrams(texts: Sequence[str], n: int) -> Counter:
    _check_texts(texts)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    counts: Counter = Counter()
    for text in texts:
        counts.update(_ngrams(_tokens(text), n))
    return counts


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: distinct n-grams / total n-grams over all texts (0.0 when no text has n tokens)."""
    counts = _all_ngrams(texts, n)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def ngram_entropy(texts: Sequence[str], n: int) -> float:
    """Entropy (nats) of the n-gram frequency distribution over all texts (0.0 when there are no n-grams)."""
    return _entropy(list(_all_ngrams(texts, n).values()))


def _sentence_bleu(hyp: list[str], refs: list[list[str]], max_n: int, epsilon: float = 0.1) -> float:
    """Smoothed sentence BLEU of `hyp` against several references.

    Clipped n-gram precisions with NLTK "method 1" smoothing (an order with no match gets
    epsilon / total instead of 0), uniform weights, and the brevity penalty against the
    reference whose length is closest (shorter one on ties). Only orders the hypothesis is long
    enough to contain are averaged, so short texts are not scored 0 by construction.
    """
    if not hyp:
        return 0.0
    orders = min(max_n, len(hyp))
    log_p = 0.0
    for n in range(1, orders + 1):
        hyp_counts = Counter(_ngrams(hyp, n))
        max_ref: Counter = Counter()
        for ref in refs:
            for gram, c in Counter(_ngrams(ref, n)).items():
                max_ref[gram] = max(max_ref[gram], c)
        clipped = sum(min(c, max_ref[g]) for g, c in hyp_counts.items())
        total = sum(hyp_counts.values())
        log_p += math.log((clipped if clipped > 0 else epsilon) / total)
    ref_len = min((len(r) for r in refs), key=lambda r_len: (abs(r_len - len(hyp)), r_len))
    brevity = 1.0 if len(hyp) > ref_len else math.exp(1.0 - ref_len / len(hyp))
    return brevity * math.exp(log_p / orders)


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Self-BLEU: mean BLEU of each text against all the others; high means repetitive generations.

    Uses epsilon smoothing (NLTK method 1, epsilon = 0.1) so pairs with no shared higher-order
    n-grams score near 0 rather than exactly 0. Needs at least two texts.
    """
    _check_texts(texts)
    if len(texts) < 2:
        raise ValueError("self_bleu needs at least two texts")
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n}")
    tokenised = [_tokens(t) for t in texts]
    scores = [
        _sentence_bleu(hyp, tokenised[:i] + tokenised[i + 1:], max_n)
        for i, hyp in enumerate(tokenised)
    ]
    return float(np.mean(scores))


def generation_diversity(texts: Sequence[str]) -> dict[str, float | None]:
    """All generation-diversity numbers for one set of generated texts.

    Self-BLEU needs two texts; with a single text it is None (JSON null, unlike NaN) rather than failing.
    """
    _check_texts(texts)
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu": self_bleu(texts) if len(texts) >= 2 else None,
        "unigram_entropy": ngram_entropy(texts, 1),
        "bigram_entropy": ngram_entropy(texts, 2),
    }
