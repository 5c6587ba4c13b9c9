"""The judges of a study, built once from the judge splits, scoring every cell alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steer.corpora import Corpus, check_disjoint, corpus_label
from steer.judges import JudgeError
from steer.judges.diversity import DiversityJudge
from steer.judges.heldout import HeldoutStylePPL
from steer.judges.text import words

JUDGES = ("heldout_ppl", "classifier", "diversity")
HOW_TO_GET_THE_CLASSIFIER = (
    "the classifier must tell the corpora apart on held-out chunks as long as the continuations (accuracy >= 0.75): "
    "use a more distinctive or a larger corpus (more judge text, e.g. --judge-fraction up to 0.5), or longer "
    "continuations (--max-new-tokens)")


class JudgePanel:
    """Per target corpus: held-out style perplexity and the style classifier; for all: degeneracy, diversity.

    Built from the corpora's judge splits only (a judge split that shares a
    document with its steer split is refused). The classifier's classes are
    the ``class_corpora`` (every named corpus, whether swept or not) plus
    ``neutral``. A classifier that refuses to judge (too little text, or too
    inaccurate to trust) is left out and the other judges still score: its
    columns stay empty and :attr:`classifier_refusal` (also in :meth:`report`)
    says why and how to get it.

    Args:
        targets: the swept corpora, by the name the results use.
        class_corpora: corpora that are classes of the classifier (the targets among them).
        neutral: ordinary text of none of the styles (the base model's books).
        lengths: word lengths of the continuations to be judged (for the classifier's chunks).
        kinds: which judges to build, among JUDGES.
        classifier_options: keyword arguments of StyleClassifier.
    """

    def __init__(self, targets: Mapping[str, Corpus], class_corpora: Mapping[str, Corpus] | None = None,
                 neutral: Corpus | None = None, lengths: Sequence[int] = (30,), kinds: Sequence[str] = JUDGES,
                 classifier_options: Mapping | None = None):
        bad = [k for k in kinds if k not in JUDGES]
        if bad:
            raise ValueError(f"`judges` must be among {JUDGES}, got {bad}")
        for corpus in [*(class_corpora or {}).values(), *targets.values(), *([neutral] if neutral else [])]:
            check_disjoint(corpus.judge, corpus.steer)
        self.kinds = tuple(kinds)
        self.heldout = {}
        if "heldout_ppl" in kinds:
            self.heldout = {name: HeldoutStylePPL(c.judge, name=name) for name, c in targets.items()}
        self.classifier = None
        self.classifier_refusal: dict | None = None
        if "classifier" in kinds:
            from steer.judges.classifier import NEUTRAL, StyleClassifier

            if neutral is None:
                raise ValueError("the style classifier needs a `neutral` corpus (ordinary text of no target style)")
            classes = {name: c.judge for name, c in {**(class_corpora or {}), **targets}.items()}
            classes[NEUTRAL] = neutral.judge
            try:
                self.classifier = StyleClassifier(classes, lengths, **dict(classifier_options or {}))
            except JudgeError as err:
                self.classifier_refusal = {"refused": str(err), "how_to_get_it": HOW_TO_GET_THE_CLASSIFIER,
                                           "report": getattr(err, "report", None)}
        self.diversity = DiversityJudge() if "diversity" in kinds else None

    def score(self, target: str, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, list[float]]:
        """Every judge's per-sample values for continuations meant to be in ``target``'s style."""
        out: dict[str, list[float]] = {}
        if target in self.heldout:
            out.update(self.heldout[target].score(prompts, continuations))
        if self.classifier is not None:
            out.update(self.classifier.for_target(target).score(prompts, continuations))
        if self.diversity is not None:
            out.update(self.diversity.score(prompts, continuations))
        return out

    def summary(self, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, float]:
        """Cell-level diversity (distinct-1/2, self-BLEU), or {} without the diversity judge."""
        return self.diversity.summary(prompts, continuations) if self.diversity is not None else {}

    def report(self) -> dict:
        """What the judges are and how good they are, for judge.json."""
        out: dict = {"judges": list(self.kinds)}
        if self.heldout:
            out["heldout_ppl"] = {corpus_label(name): {"orders": j.table.order, "vocabulary": len(j.vocab),
                                         "judge_words": j.table.stats["n_tokens"], "smoothing": "kneser_ney"}
                                  for name, j in self.heldout.items()}
        if self.classifier is not None:
            report = dict(self.classifier.report)  # classes named as tables name corpora (a path: its file name)
            report["classes"] = [corpus_label(c) for c in report["classes"]]
            report["heldout_accuracy_per_class"] = {corpus_label(c): v for c, v in
                                                    report["heldout_accuracy_per_class"].items()}
            out["classifier"] = report
        elif self.classifier_refusal is not None:
            out["classifier"] = self.classifier_refusal
        return out


def check_judge_text(targets: Mapping[str, Corpus], classes: Mapping[str, Corpus] | None, max_words: int,
                     kinds: Sequence[str] = JUDGES) -> None:
    """Refuse, before any model loads, judge splits too small for the judges (JudgeError naming the corpus).

    The held-out perplexity needs 1,000 judge words per target. The
    classifier needs 50 chunks of up to ``max_words`` words per class, but a
    class too small for it does not stop a study: the panel then leaves the
    classifier out and says why, so only the shipped corpora (which are
    classes whatever is swept) are checked here.
    """
    if "heldout_ppl" in kinds:
        for name, c in targets.items():
            n = sum(len(d.split()) for d in c.judge)
            if n < 1000:
                raise JudgeError(f"the judge split of {name!r} has about {n} words; the held-out perplexity needs "
                                 "1,000 (a larger corpus, or --judge-fraction up to 0.5)")
    if "classifier" in kinds:
        for name, c in (classes or {}).items():
            if name in targets:
                continue
            n = sum(len(d.split()) for d in c.judge)
            if n < 50 * max_words:
                raise JudgeError(f"the judge split of {name!r} has about {n} words; the style classifier needs "
                                 f"about {50 * max_words} (50 chunks as long as the continuations)")


def word_lengths(texts: Sequence[str]) -> list[int]:
    """Word counts of texts (at least 1 each), for the classifier's chunk lengths."""
    return [max(1, len(words(t))) for t in texts]


__all__ = ["JUDGES", "JudgeError", "JudgePanel", "check_judge_text", "word_lengths"]
