"""The graph check's bit-parallel ROUGE-L equals rouge-score's on real reviews."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer, tokenizers

from copersona.eval.graph_check import LCSIndex, rouge_l_f1


def test_bit_parallel_rouge_l_equals_rouge_score_on_real_reviews(built_db):
    texts = [i.text for items in list(built_db.profiles().values())[:12] for i in items if i.text][:60]
    # Edge cases next to the real texts: empty, repeated tokens, and one text longer than a machine word.
    texts += ["", "good good good good", "good", " ".join(texts[:4])]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    for target in texts[::5]:
        index = LCSIndex(tokenizer.tokenize(target))
        for prediction in texts:
            expected = scorer.score(target, prediction)["rougeL"].fmeasure
            assert rouge_l_f1(index, tokenizer.tokenize(prediction)) == pytest.approx(expected, abs=1e-12)
