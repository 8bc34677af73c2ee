"""The reply parser on realistic replies, and fuzzed: it never crashes and never invents a feature."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xaibench.llm.parse import letters, parse_ranking

NAMES = ["age", "income", "credit score", "num_children", "x"]
LABELS = letters(5)  # A..E


@pytest.mark.parametrize("reply, k, expected", [
    ("B, A, C", 3, ("income", "age", "credit score")),
    ("Let me think. Feature B rises with the output.\nA drops.\n\nB, A, D", 3, ("income", "age", "num_children")),
    ("Reasoning...\nAnswer: C > A > E\nHope this helps!", 3, ("credit score", "age", "x")),
    ("The most important features are:\n1. B\n2. D\n3. A", 3, ("income", "num_children", "age")),
    ("- income\n- credit score\n- age", 3, ("income", "credit score", "age")),
    ("Final rank: Credit_Score, AGE, income.", 3, ("credit score", "age", "income")),
    ("b, a, c", 3, ("income", "age", "credit score")),
    ("B, B, A, C", 3, ("income", "age", "credit score")),  # duplicates keep their first place
    ("I think a good answer is B, then A, then C", 3, ("income", "age", "credit score")),  # "a" is no feature
    # the reply changes its mind: the last answer line wins
    ("Answer: A, B, C\nWait: B rises with the output more than A does.\nAnswer: B, C, A\nDone.", 3,
     ("income", "credit score", "age")),
])
def test_realistic_replies(reply, k, expected):
    parsed = parse_ranking(reply, NAMES, k, LABELS)
    assert parsed.ok and parsed.ranking == expected, parsed


def test_too_few_and_hallucinated_features_are_recorded_not_guessed():
    few = parse_ranking("B, A", NAMES, 3, LABELS)
    assert not few.ok and few.ranking == ("income", "age") and "2 valid features, 3 asked" in few.reason
    made_up = parse_ranking("Z, B, Q, A, C", NAMES, 3, LABELS)
    assert made_up.ok and made_up.ranking == ("income", "age", "credit score") and made_up.invalid == ("Z", "Q")
    nothing = parse_ranking("I cannot determine the features.", NAMES, 1, LABELS)
    assert not nothing.ok and nothing.ranking == () and nothing.reason == "the reply names no feature"


def test_letters():
    assert letters(3) == ["A", "B", "C"] and letters(28)[25:] == ["Z", "AA", "AB"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=1, max_value=5))
def test_never_crashes_and_never_invents(reply, k):
    parsed = parse_ranking(reply, NAMES, k, LABELS)
    assert set(parsed.ranking) <= set(NAMES) and len(set(parsed.ranking)) == len(parsed.ranking)
    assert parsed.ok == (len(parsed.ranking) == k)


@settings(max_examples=200, deadline=None)
@given(st.permutations(LABELS), st.sampled_from([", ", " > ", "; ", " "]), st.text(alphabet=" .\n", max_size=5))
def test_any_clean_list_parses_to_itself(order, separator, tail):
    parsed = parse_ranking("Some reasoning.\n" + separator.join(order) + tail, NAMES, 5, LABELS)
    assert parsed.ok and parsed.ranking == tuple(NAMES[LABELS.index(label)] for label in order)


def test_prose_words_are_not_reported_as_invalid_labels():
    parsed = parse_ranking("I think a good answer is B, then A, then C", NAMES, 3, LABELS)
    assert parsed.ok and parsed.invalid == ()


TEN = [f"f{j}" for j in range(10)]  # labels A..J: "I" and "A" are labels here


@pytest.mark.parametrize("reply, expected", [
    ("I think the answer is C, A, B", ("f2", "f0", "f1")),
    ("I'm fairly sure: C, A, B", ("f2", "f0", "f1")),
    ("A and C matter most, then I", ("f0", "f2", "f8")),
    ("Answer: I, A, C", ("f8", "f0", "f2")),
])
def test_the_words_i_and_a_are_not_labels_in_prose(reply, expected):
    parsed = parse_ranking(reply, TEN, 3, letters(10))
    assert parsed.ok and parsed.ranking == expected, parsed


def test_a_reply_without_an_answer_names_no_feature_even_with_label_i():
    parsed = parse_ranking("I cannot tell which features matter.", TEN, 1, letters(10))
    assert not parsed.ok and parsed.reason == "the reply names no feature"


@pytest.mark.parametrize("reply", ["A change in C matters most, then B and I",
                                   "A significantly affects the output, followed by C, B, D, E"])
def test_an_a_or_i_that_may_be_a_word_leaves_the_reply_unparsed(reply):
    parsed = parse_ranking(reply, TEN, 3, letters(10))
    assert not parsed.ok and parsed.reason == "'A' may be the English word or feature A"
