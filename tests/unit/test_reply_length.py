"""A model answer longer than the tenant's --max-reply-chars is cut at a sentence boundary (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridflow.llm import cut_at_sentence

LONG = "Abrimos às 8h. Fechamos às 18h! Aos domingos abrimos só de manhã, das 8h às 12h."


@pytest.mark.parametrize(("limit", "expected"), [
    (len(LONG), LONG),  # fits: unchanged
    (40, "Abrimos às 8h. Fechamos às 18h!"),  # the last whole sentence within the limit
    (20, "Abrimos às 8h."),
])
def test_a_long_answer_is_cut_after_its_last_whole_sentence(limit: int, expected: str):
    assert cut_at_sentence(LONG, limit) == expected


def test_without_a_sentence_end_in_reach_it_is_cut_at_a_word_and_marked():
    text = "Temos pão francês, pão de queijo, broa de milho, sonho, rosca e bolo de fubá todos os dias"
    cut = cut_at_sentence(text, 30)
    assert cut == "Temos pão francês, pão de…" and len(cut) <= 30


def test_a_line_break_ends_a_part_like_a_sentence():
    assert cut_at_sentence("Horários:\nseg a sex 8h-18h\nsáb 8h-12h", 30) == "Horários:\nseg a sex 8h-18h"


@given(st.text(min_size=0, max_size=300), st.integers(min_value=20, max_value=200))
def test_the_cut_never_exceeds_the_limit_and_keeps_a_prefix(text: str, limit: int):
    cut = cut_at_sentence(text, limit)
    assert len(cut) <= limit
    assert text.startswith(cut.removesuffix("…").rstrip()) or cut == text
