import pytest

from autoplace.template import (Field, Mask, Slot, TemplateError, Text, parse, placement_class, render, segments,
                                validate)

FIELDS = ["premise", "hypothesis"]


def test_parse_parts_and_slot_numbering():
    t = parse("[P:3] {premise} [P] Question: {hypothesis}? [P:2] Answer: [MASK]")
    kinds = [type(p).__name__ for p in t.parts]
    assert kinds == ["Slot", "Text", "Field", "Text", "Slot", "Text", "Field", "Text", "Slot", "Text", "Mask"]
    assert [(s.index, s.length) for s in t.slots] == [(0, 3), (1, 1), (2, 2)]
    assert t.n_prompt_tokens == 6
    assert t.fields == FIELDS


def test_render_shows_fields_and_slots():
    t = parse("[P:2] {premise} Q: {hypothesis}? A: [MASK]")
    assert render(t, {"premise": "Cats purr", "hypothesis": "cats are loud"}) == \
        "[P][P] Cats purr Q: cats are loud? A: [MASK]"


def test_segments_move_whitespace_onto_fields_and_drop_it_before_mask():
    t = parse("[P:1] {premise} Question: {hypothesis}? Answer: [MASK]")
    segs = segments(t, {"premise": "A b.", "hypothesis": "c"})
    assert segs[0] == Slot(1, 0, 0)
    assert segs[1] == ("field", "premise", " A b.")
    assert segs[2] == " Question:"
    assert segs[3] == ("field", "hypothesis", " c")
    assert segs[4] == "? Answer:"
    assert isinstance(segs[5], Mask)


@pytest.mark.parametrize("text, problem, column", [
    ("", "empty", None),
    ("   ", "empty", None),
    ("{premise} is it?", "no [MASK]", None),
    ("{premise} [MASK] [MASK]", "second [MASK]", 18),
    ("{premise [MASK]", "unbalanced brace '{'", 1),
    ("{premise} } [MASK]", "unbalanced brace '}'", 11),
    ("[P:0] {premise} [MASK]", "slot length 0 is outside 1-64", 1),
    ("[P:65] {premise} [MASK]", "slot length 65 is outside 1-64", 1),
    ("{premise} [P:x] [MASK]", "slot length 'x' is not a number", 11),
    ("{pre mise} [MASK]", "bad field name", 1),
])
def test_parse_errors_name_problem_and_column(text, problem, column):
    with pytest.raises(TemplateError) as err:
        parse(text)
    assert problem in str(err.value)
    if column is not None:
        assert f"column {column}:" in str(err.value)


def test_validate_unknown_field_names_column():
    with pytest.raises(TemplateError, match=r"column 11: unknown field \{hypotheses\}"):
        validate(parse("{premise} {hypotheses} [MASK]"), FIELDS, causal=False)


def test_validate_mask_must_end_causal_template():
    t = parse("{premise} [MASK] [P:2]")
    validate(t, FIELDS, causal=False)  # fine for a masked LM
    with pytest.raises(TemplateError, match="column 11: \\[MASK\\] must end the template for a causal model"):
        validate(t, FIELDS, causal=True)
    validate(parse("{premise} [MASK]  "), FIELDS, causal=True)  # trailing spaces are fine


@pytest.mark.parametrize("text, expected", [
    ("{premise} Question: {hypothesis}? Answer: [MASK]", "none"),
    ("[P:4] {premise} Question: {hypothesis}? Answer: [MASK]", "start-only"),
    ("{premise} [P:4] Question: {hypothesis}? Answer: [MASK]", "middle-only"),
    ("{premise} Question: {hypothesis}? [P:4] Answer: [MASK]", "end-only"),
    ("{premise} Question: {hypothesis}? Answer: [MASK] [P:4]", "end-only"),
    ("[P:2] {premise} Question: {hypothesis}? [P:2] Answer: [MASK]", "mixed"),
])
def test_placement_class(text, expected):
    assert placement_class(parse(text)) == expected


def test_literal_text_is_kept():
    t = parse("Review: {premise} [MASK]")
    assert t.parts[0] == Text("Review: ") and t.parts[1] == Field("premise", 8)
