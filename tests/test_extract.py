"""Rules-based extraction of durable facts and preferences from a user's message."""

from __future__ import annotations

import pytest

from localmem.text.extract import extract, extract_with_llm, grounded

KEPT = [
    ("My sister is called Ana.", "My sister is called Ana.", "fact", "my sister"),
    ("I am allergic to nuts", "I am allergic to nuts.", "fact", "allergy nuts"),
    ("I'm severely allergic to penicillin!", "I'm severely allergic to penicillin.", "fact", None),
    ("I prefer short answers.", "I prefer short answers.", "preference", "likes short answers"),
    ("Oh, and my dog's name is Rex!", "My dog's name is Rex.", "fact", "my dog's name"),
    ("I live in Lisbon with my partner.", "I live in Lisbon with my partner.", "fact", "live in"),
    ("I'm a nurse at the general hospital", "I'm a nurse at the general hospital.", "fact", None),
    ("Remember that the spare key is under the blue pot.", "The spare key is under the blue pot.",
     "fact", "note"),
    ("I have two cats named Tom and Jerry", "I have two cats named Tom and Jerry.", "fact", None),
    ("Please always answer in French.", "Please always answer in French.", "preference", "style"),
    ("my name is Rui Costa", "My name is Rui Costa.", "fact", "my name"),
    ("I'm vegetarian, by the way.", "I'm vegetarian.", "fact", None),
    ("I don't eat pork or shellfish", "I don't eat pork or shellfish.", "preference", None),
]  # fmt: skip

LEFT = [
    "What is my sister called?",
    "I like it",
    "I'm tired today.",
    "My flight is going to be late",
    "If my boss calls, say I'm out.",
    "hello there",
    "Is my sister called Ana?",
    "She said my name is wrong?",
    "",
]


@pytest.mark.parametrize(("message", "text", "kind", "key"), KEPT)
def test_durable_statements_are_kept_in_the_users_words(message, text, kind, key):
    got = extract(message)
    assert [(e.text, e.kind) for e in got] == [(text, kind)]
    assert 0 < got[0].importance <= 1
    if key is not None:
        assert got[0].key == key


@pytest.mark.parametrize("message", LEFT)
def test_questions_moods_and_conditionals_are_not_facts(message):
    assert extract(message) == []


def test_several_statements_in_one_message_each_once():
    got = extract("My favourite colour is green; I hate mushrooms. My favourite colour is green!")
    assert [e.text for e in got] == ["My favourite colour is green.", "I hate mushrooms."]
    assert [e.kind for e in got] == ["fact", "preference"]


def test_garbage_never_raises():
    for junk in (None, 3, b"bytes", "\x00\ud800", "?" * 10_000, "my " * 5000, "I " * 5000):
        assert isinstance(extract(junk), list)  # type: ignore[arg-type]


class Scripted:
    """An engine whose reply is fixed: to test what extract_with_llm keeps of it."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def generate(self, messages, **kw):
        self.prompts.append(messages)
        return iter([self.reply])


def test_model_restatements_are_kept_only_when_grounded_in_the_message():
    msg = "Ana, my sister, turns 30 in May. Work was fine."
    eng = Scripted(
        "1. My sister Ana turns 30 in May.\n"
        "- I love pizza.\n"  # invented: not in the message
        "- My sister is a doctor.\n"  # invented detail
        "Is my sister 30?\n"
        "NONE"
    )
    got = extract_with_llm(eng, msg)
    assert [e.text for e in got] == ["My sister Ana turns 30 in May."]
    assert msg in eng.prompts[0][0]["content"]
    # The rules' findings stay and are not repeated; questions never reach the model.
    eng2 = Scripted("I am allergic to nuts.\nMy cat is called Tom.")
    got = extract_with_llm(eng2, "I am allergic to nuts and my cat is called Tom")
    assert [e.text for e in got] == ["I am allergic to nuts.", "My cat is called Tom."]
    assert extract_with_llm(Scripted("I love it."), "do I love it?") == []


def test_the_real_model_only_adds_grounded_facts():
    from localmem.llm import open_engine

    eng = open_engine()
    for msg in ("We adopted a beagle called Max last week.", "the weather is nice today"):
        for e in extract_with_llm(eng, msg):
            assert grounded(e.text, msg), e
