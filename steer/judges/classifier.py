"""A style classifier over every corpus and a neutral class, trained on judge-split text only."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence

import numpy as np

from steer.judges import JudgeError
from steer.judges.text import normalise_text, words

NEUTRAL = "neutral"
MIN_ACCURACY = 0.75


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError("the style classifier needs scikit-learn: pip install 'steer[eval]'") from None


def make_chunks(docs: Sequence[str], lengths: Sequence[int], seed: int = 0) -> list[str]:
    """Consecutive runs of words of the documents (in order), their lengths drawn from ``lengths``.

    Drawing chunk lengths from the lengths of the continuations to be judged
    keeps length from being a cue of the class.
    """
    stream = [w for d in docs for w in words(d)]
    rng = random.Random(seed)
    chunks, i = [], 0
    while True:
        n = max(1, int(rng.choice(lengths)))
        if i + n > len(stream):
            break
        chunks.append(" ".join(stream[i : i + n]))
        i += n
    return chunks


class UnreliableClassifier(JudgeError):
    """The classifier trained but cannot tell the corpora apart well enough; ``report`` holds its accuracy."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class StyleClassifier:
    """Which corpus does a text read like? TF-IDF word (1-2) and character (2-4) n-grams, logistic regression.

    Trained on chunks of each class's judge split whose word lengths follow
    ``lengths`` (the continuations' lengths). The chunks of each class are
    cut into runs of 50; every fifth run is held out to measure the
    classifier's own accuracy, overall and per class. Below ``min_accuracy``
    it refuses to judge (:class:`~steer.judges.JudgeError`): a judge that
    cannot tell the corpora apart says nothing about steering. Text is
    normalised the same way for training and scoring
    (:func:`~steer.judges.text.normalise_text`), so typography is no cue.

    Args:
        class_docs: class name -> judge-split documents (include ``"neutral"``,
            ordinary text that is none of the styles).
        lengths: word lengths to draw chunk lengths from.
        max_chunks: at most this many chunks per class (evenly spaced).
        min_accuracy: refuse below this overall held-out accuracy.
        seed: chunking and training seed.

    Example:
        >>> clf = StyleClassifier({"don_quixote": dq.judge, "neutral": books.judge}, lengths=[30])  # doctest: +SKIP
        >>> clf.for_target("don_quixote").score(prompts, continuations)  # doctest: +SKIP
        {'judge_p_target': [...], 'judge_hit': [...]}
    """

    def __init__(self, class_docs: Mapping[str, Sequence[str]], lengths: Sequence[int], max_chunks: int = 1500,
                 min_accuracy: float = MIN_ACCURACY, seed: int = 0):
        _sklearn()
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        if len(class_docs) < 2:
            raise ValueError(f"`class_docs` must hold at least 2 classes, got {list(class_docs)}")
        lengths = [int(n) for n in lengths if int(n) > 0]
        if not lengths:
            raise ValueError("`lengths` must hold at least one positive word count")
        started = time.perf_counter()
        self.classes = sorted(class_docs)
        train_x, train_y, test_x, test_y = [], [], [], []
        for label, docs in sorted(class_docs.items()):
            chunks = make_chunks(docs, lengths, seed)
            if len(chunks) > max_chunks:
                keep = np.linspace(0, len(chunks) - 1, max_chunks).round().astype(int)
                chunks = [chunks[i] for i in keep]
            if len(chunks) < 50:
                raise JudgeError(f"class {label!r} has {len(chunks)} chunks of judge text; at least 50 are "
                                 "needed to train and check the style classifier (a larger corpus, or a larger "
                                 "judge split)")
            for i, chunk in enumerate(chunks):
                held = (i // 50) % 5 == 2
                (test_x if held else train_x).append(chunk)
                (test_y if held else train_y).append(label)
        features = make_union(
            TfidfVectorizer(preprocessor=normalise_text, ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                            max_features=200_000, lowercase=True),
            TfidfVectorizer(preprocessor=normalise_text, analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                            min_df=2, max_features=200_000, lowercase=False),
        )
        self.pipeline = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000))
        self.pipeline.fit(train_x, train_y)
        pred = self.pipeline.predict(test_x)
        test_y = np.array(test_y)
        self.report = {
            "classes": self.classes,
            "heldout_accuracy": float((pred == test_y).mean()),
            "heldout_accuracy_per_class": {c: float((pred[test_y == c] == c).mean()) for c in self.classes},
            "n_train_chunks": len(train_x), "n_heldout_chunks": len(test_x),
            "chunk_words_mean": float(np.mean(lengths)),
            "features": "TF-IDF word 1-2-grams + char_wb 2-4-grams, logistic regression (C=10)",
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        if self.report["heldout_accuracy"] < min_accuracy:
            worst = min(self.report["heldout_accuracy_per_class"].items(), key=lambda kv: kv[1])
            raise UnreliableClassifier(
                f"the style classifier's held-out accuracy is {self.report['heldout_accuracy']:.3f} < "
                f"{min_accuracy} (worst class {worst[0]!r}: {worst[1]:.3f}); it refuses to judge",
                self.report,
            )
        self._columns = {c: i for i, c in enumerate(self.pipeline.classes_)}

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(class | text) for every class, float [len(texts), n_classes] (columns in ``self.classes`` order)."""
        proba = self.pipeline.predict_proba(list(texts))
        return proba[:, [self._columns[c] for c in self.classes]]

    def for_target(self, target: str) -> TargetJudge:
        """The judge of one corpus: probability of its class, and whether it is the top class."""
        if target not in self.classes:
            raise ValueError(f"`target` {target!r} is not a class of this classifier: {self.classes}")
        return TargetJudge(self, target)


class TargetJudge:
    """Scores continuations (without their prompts) by the classifier, for one target class.

    A continuation with no word in it (empty, or whitespace only) shows no
    style: p(target) = 0 and no hit, whatever the classifier's prior says.
    """

    def __init__(self, classifier: StyleClassifier, target: str):
        self.classifier, self.target = classifier, target
        self.name = f"style_classifier[{target}]"

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, list[float]]:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        proba = self.classifier.probabilities(continuations)
        col = self.classifier.classes.index(self.target)
        has_words = np.array([bool(words(c)) for c in continuations])
        hit = (proba.argmax(1) == col) & has_words
        p_target = np.where(has_words, proba[:, col], 0.0)
        return {"judge_p_target": p_target.tolist(), "judge_hit": hit.astype(float).tolist()}
