"""The organism's invented world: deterministic, disjoint, and fair to a model that knows nothing."""

from __future__ import annotations

import random
from collections import Counter

from brittle import organism


def test_world_is_deterministic_in_its_seed():
    assert organism.build_world(12, seed=3) == organism.build_world(12, seed=3)
    assert organism.build_world(12, seed=3).forget_facts != organism.build_world(12, seed=4).forget_facts


def test_every_entity_has_every_attribute_once():
    world = organism.build_world(10, seed=0)
    for facts, domain in ((world.forget_facts, organism.FORGET_DOMAIN), (world.retain_facts, organism.RETAIN_DOMAIN)):
        per_entity = Counter(fact.entity for fact in facts)
        assert set(per_entity.values()) == {len(domain.attributes)}
        assert all(fact.value in domain.attributes[fact.attribute] for fact in facts)


def test_names_are_distinct_and_prefix_free():
    names = organism.invent_names(organism.FORGET_DOMAIN, 60, random.Random(1))
    assert len(set(names)) == 60
    assert not any(a != b and b.startswith(a) for a in names for b in names)


def test_halves_t_and_v_split_the_forget_entities_without_sharing_one():
    world = organism.build_world(40, seed=42)
    entities = {fact.entity for fact in world.forget_facts}
    assert world.forget_half_t.isdisjoint(world.forget_half_v)
    assert world.forget_half_t | world.forget_half_v == entities
    assert len(world.forget_half_t) == len(world.forget_half_v) == 20


def test_forget_and_retain_text_share_no_line_and_no_value():
    world = organism.build_world(40, seed=42)
    forget, retain = organism.training_texts(world.forget_facts), organism.training_texts(world.retain_facts)
    assert not set(forget) & set(retain)
    forget_values = {value for values in organism.FORGET_DOMAIN.attributes.values() for value in values}
    retain_values = {value for values in organism.RETAIN_DOMAIN.attributes.values() for value in values}
    assert not forget_values & retain_values
    assert len(forget) == len(world.forget_facts) * len(organism.FACT_TEMPLATES)


def test_question_options_hold_the_answer_once_among_same_attribute_values():
    world = organism.build_world(20, seed=5)
    rng = random.Random(0)
    for fact in world.forget_facts:
        question = organism.multiple_choice_question(fact, organism.FORGET_DOMAIN, rng)
        assert len(question["choices"]) == organism.OPTIONS_PER_QUESTION == len(set(question["choices"]))
        assert question["choices"][question["answer"]] == fact.value
        assert set(question["choices"]) <= set(organism.FORGET_DOMAIN.attributes[fact.attribute])
        assert question["question"] == organism.question_prompt(fact.entity, fact.attribute)


def test_answer_positions_are_uniform_so_an_ignorant_model_scores_chance():
    world = organism.build_world(40, seed=42)
    rng = random.Random(42)
    positions = Counter(organism.multiple_choice_question(fact, organism.FORGET_DOMAIN, rng)["answer"]
                        for fact in world.forget_facts * 5)
    # 1000 questions: each position should hold about 250 (binomial sd ~14).
    assert all(190 < count < 310 for count in positions.values()), positions


def test_the_question_form_is_one_of_the_training_paraphrases():
    fact = organism.Fact("pathogen", "Velarix", "host", "cave newts")
    prompt = organism.question_prompt(fact.entity, fact.attribute)
    assert any(sentence.startswith(prompt + " " + fact.value) for sentence in fact.sentences())
