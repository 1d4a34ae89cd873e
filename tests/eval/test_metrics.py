"""Metric values against the libraries' documented examples, and the resampling interface."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from copersona.eval.metrics import METRICS, load_metric


def test_rouge_matches_the_rouge_score_readme_example():
    # rouge-score's README: score(target='The quick brown fox jumps over the lazy dog',
    # prediction='The quick brown dog jumps on the log.'). Unigram overlap: 6 of 8 predicted and of
    # 9 reference tokens, so F = 2 * (6/8 * 6/9) / (6/8 + 6/9) = 12/17.
    rows = load_metric("rouge1").statistics(
        ["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"]
    )
    assert rows[0, 0] == pytest.approx(12 / 17)


def test_meteor_matches_the_nltk_docstring_example():
    hypothesis = "It is a guide to action which ensures that the military always obeys the commands of the party"
    reference = "It is a guide to action that ensures that the military will forever heed Party commands"
    rows = load_metric("meteor").statistics([hypothesis], [reference])
    assert round(float(rows[0, 0]), 4) == 0.6944  # nltk.translate.meteor_score docstring


def test_corpus_bleu_from_summed_statistics_equals_sacrebleu():
    import sacrebleu

    # sacrebleu's README example (first reference stream).
    hypotheses = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    references = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
    metric = load_metric("bleu")
    rows = metric.statistics(hypotheses, references)
    assert rows.shape == (3, 10)
    assert metric.aggregate(rows) == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert metric.aggregate(rows[[0, 0, 2]]) == pytest.approx(
        sacrebleu.corpus_bleu([hypotheses[0], hypotheses[0], hypotheses[2]], [[references[i] for i in (0, 0, 2)]]).score
    )


def test_bertscore_on_the_packaged_encoder():
    metric = load_metric("bertscore")
    same = "These strings sound bright and stay in tune for weeks."
    rows = metric.statistics(
        [same, "These strings sound warm and keep their tuning.", "I ordered a red sofa."], [same, same, same]
    )
    assert rows[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert rows[0, 0] > rows[1, 0] > rows[2, 0]
    assert metric.config()["comparable_with_papers"] is False


@pytest.mark.parametrize("name", METRICS)
def test_every_metric_scores_an_empty_prediction_without_failing(name):
    metric = load_metric(name)
    rows = metric.statistics(["", "A fine tuner."], ["A fine tuner that clips on.", "A fine tuner."])
    assert len(rows) == 2 and np.isfinite(metric.aggregate(rows))
    assert metric.config()


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("cider")


# -- the rating task ------------------------------------------------------------------------------
def _rating_predictions(expected, answered, truths):
    from copersona.inference import Prediction

    return [
        Prediction("m", str(n), "u", "i", f"{truth:g}", f"{answer:g}", rating=float(value))
        for n, (value, answer, truth) in enumerate(zip(expected, answered, truths))
    ]


RATING_CASES = [
    # name, reference implementation on (expected ratings, truths)
    ("mae", lambda a, b: np.abs(a - b).mean()),
    ("rmse", lambda a, b: np.sqrt(((a - b) ** 2).mean())),
    ("pearson", lambda a, b: np.corrcoef(a, b)[0, 1]),
    # Spearman: Pearson's r of the average ranks (ties share their mean rank).
    ("spearman", lambda a, b: np.corrcoef(rankdata(a), rankdata(b))[0, 1]),
]


@pytest.mark.parametrize(("name", "reference"), RATING_CASES)
def test_rating_metrics_match_their_definitions_on_whole_sets_and_resamples(name, reference):
    rng = np.random.default_rng(3)
    truths = rng.integers(1, 6, size=40).astype(float)
    expected = np.clip(truths + rng.normal(0, 0.8, size=40), 1, 5)
    metric = load_metric(name)
    rows = metric.rows(_rating_predictions(expected, np.round(expected), truths))
    assert metric.aggregate(rows) == pytest.approx(reference(expected, truths))
    sample = rng.integers(0, 40, size=40)
    assert metric.aggregate(rows[sample]) == pytest.approx(reference(expected[sample], truths[sample]))


def test_accuracy_reads_the_answered_rating_and_correlations_of_constant_predictions_are_undefined():
    truths = [5.0, 4.0, 1.0, 4.0]
    predictions = _rating_predictions([4.6, 4.4, 2.0, 4.0], [5, 5, 1, 4], truths)
    accuracy = load_metric("accuracy")
    assert accuracy.aggregate(accuracy.rows(predictions)) == pytest.approx(0.75)
    pearson = load_metric("pearson")
    constant = _rating_predictions([3.0] * 4, [3] * 4, truths)
    assert np.isnan(pearson.aggregate(pearson.rows(constant)))
    assert not load_metric("mae").higher_is_better and accuracy.higher_is_better
