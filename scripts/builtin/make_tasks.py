#!/usr/bin/env python3
"""Generate the tinytune built-in finetuning tasks.

Each task is a folder www/assets/builtin/tasks/<name>/ with
  train.jsonl  test.jsonl   one {"prompt": ..., "completion": ...} per line
  task.json                 what the task is and how `tinytune eval` scores it

Tasks (see www/assets/builtin/tasks/README.md for the exact metrics):
  json   pull a name, an animal and a place out of a sentence, as a JSON object
  sql    turn a question into TinySQL, a small query language made up for tinytune
  style  rewrite a sentence in "pirate" style, following fixed rules
  qa     answer a one-word question about a three-sentence story
  pirate-prefs
         preference pairs for DPO: the pirate rewrite (chosen) over a plain copy of the
         sentence or a half-done rewrite (rejected); {"prompt", "chosen", "rejected"} per line

Every completion starts with a space and ends with "\\n"; evaluation stops
generating at the first "\\n". Test prompts never appear in train.

    python3 scripts/builtin/make_tasks.py

Standard library only; the output depends only on --seed and the counts.
"""

import argparse
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lexicon import (  # noqa: E402
    ANIMALS, BOYS, COLORS, FEELINGS_BAD, FEELINGS_GOOD, GIRLS, NUMBERS, PET_NAMES, PLACES,
    RELATIVES, SIZES, TOWNS, TOYS, article, cap,
)

NAMES = GIRLS + BOYS


def gender(name):
    return "f" if name in GIRLS else "m"


def his(name):
    return "her" if gender(name) == "f" else "his"


# ---------------------------------------------------------------------------
# json: extract name, animal and place
# ---------------------------------------------------------------------------

JSON_KEYS = ["name", "animal", "place"]
JSON_ANIMALS = list(ANIMALS)
JSON_PLACES = list(PLACES)
ANIMAL_ADJS = SIZES + ["fluffy", "shy", "young", "old", "funny", "friendly", "sleepy", "brown",
                       "gray", "white", "black", "spotted", "red"]
TIMES = ["One day", "One morning", "Last summer", "On Saturday", "After school", "Early one morning",
         "One sunny afternoon", "Yesterday"]
DAYPARTS = ["morning", "afternoon", "evening"]


def at_place(p):
    return PLACES[p][1]


def to_place(p):
    return PLACES[p][0]


JSON_TEMPLATES = [
    "{N} saw {aAadj} {at}.",
    "{At}, {N} found {aA}.",
    "{aAadj_cap} followed {N} all the way {to}.",
    "{At}, {N} played with {aA} and {aOadj}.",
    "{N} and {his} {A} walked {to} in the {daypart}.",
    "{time}, {N} took {his} {O} {to} and met {aA}.",
    "{N} told {his} {R} about the {A} that lived {at}.",
    "It was {weather} {at} when {N} heard {aA}.",
    "There was {aA} {at}, and {N} gave it some {food}.",
    "The {A} hid {at} until {N} came back.",
    "{time}, {N} was {at} with {aAadj}.",
    "When {N} got {to}, {aA} was waiting.",
    "{N} drew a picture of {aAadj} {at}.",
    "{At}, {aAadj} ran past {N}.",
    "{time}, {aA} and {N} went {to} together.",
    "{N} was {feeling} because {aA} was sleeping {at}.",
]


def json_example(r):
    name = r.choice(NAMES)
    animal = r.choice(JSON_ANIMALS)
    place = r.choice(JSON_PLACES)
    obj = r.choice(TOYS)
    adj = r.choice(ANIMAL_ADJS)
    c = {
        "N": name, "his": his(name), "A": animal, "aA": article(animal),
        "aAadj": article(adj + " " + animal), "aAadj_cap": cap(article(adj + " " + animal)),
        "at": at_place(place), "At": cap(at_place(place)), "to": to_place(place),
        "O": obj, "aOadj": article(r.choice(COLORS) + " " + obj),
        "daypart": r.choice(DAYPARTS), "time": r.choice(TIMES),
        "R": r.choice(RELATIVES)[0], "weather": r.choice(["sunny", "windy", "cold", "quiet", "warm"]),
        "food": r.choice(["bread", "seeds", "berries", "nuts", "corn", "cheese", "apples"]),
        "feeling": r.choice(["happy", "surprised", "quiet", "curious", "excited"]),
    }
    text = r.choice(JSON_TEMPLATES).format_map(c)
    prompt = "Extract name, animal and place as JSON.\nText: %s\nJSON:" % text
    value = {"name": name, "animal": animal, "place": place}
    completion = " " + json.dumps(value) + "\n"
    return prompt, completion


# ---------------------------------------------------------------------------
# sql: questions to TinySQL
# ---------------------------------------------------------------------------

# TinySQL schema. Column order matters: WHERE conditions are written in this order.
SQL_TABLES = {
    "pets": [("name", "text"), ("animal", "text"), ("color", "text"), ("age", "number")],
    "toys": [("name", "text"), ("color", "text"), ("room", "text"), ("price", "number")],
    "kids": [("name", "text"), ("town", "text"), ("age", "number"), ("grade", "number")],
}
SQL_PETS = ["dog", "cat", "rabbit", "parrot", "hedgehog", "turtle", "mouse", "pony", "fish", "duck"]
SQL_PET_PLURALS = {"dog": "dogs", "cat": "cats", "rabbit": "rabbits", "parrot": "parrots",
                   "hedgehog": "hedgehogs", "turtle": "turtles", "mouse": "mice", "pony": "ponies",
                   "fish": "fish", "duck": "ducks"}
SQL_COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "pink"]
SQL_TOYS = ["ball", "kite", "doll", "drum", "robot", "puzzle", "teddy bear", "toy car", "toy train",
            "whistle", "balloon", "wagon"]
SQL_ROOMS = ["kitchen", "attic", "bedroom", "garden", "hall", "playroom"]
SQL_TOWNS = TOWNS
ENTITY = {"pets": ("pet", "pets"), "toys": ("toy", "toys"), "kids": ("kid", "kids")}
COL_WORD = {  # column -> (singular, plural) as said in questions
    "name": ("name", "names"), "animal": ("animal", "animals"), "color": ("color", "colors"),
    "age": ("age", "ages"), "room": ("room", "rooms"), "price": ("price", "prices"),
    "town": ("town", "towns"), "grade": ("grade", "grades"),
}
NUM_WORDS = NUMBERS


def q(v):
    return "'%s'" % v


def sql(table, cols, conds=(), order=None, limit=None):
    """Canonical TinySQL text. cols: list or "*" or "COUNT"; conds: [(col, op, value)]."""
    if cols == "COUNT":
        sel = "COUNT OF *"
    elif cols == "*":
        sel = "*"
    else:
        sel = ", ".join(cols)
    s = "FETCH %s FROM %s" % (sel, table)
    if conds:
        order_of = [c for c, _ in SQL_TABLES[table]]
        conds = sorted(conds, key=lambda c: order_of.index(c[0]))
        s += " WHERE " + " AND ".join("%s %s %s" % (c, op, v) for c, op, v in conds)
    if order:
        s += " ORDER BY %s %s" % order
    if limit is not None:
        s += " LIMIT TO %d" % limit
    return s + ";"


def text_filter(r, table):
    """A text condition: (phrase for the things, condition)."""
    sing, plur = ENTITY[table]
    if table == "pets":
        if r.random() < 0.6:
            a = r.choice(SQL_PETS)
            return SQL_PET_PLURALS[a], ("animal", "=", q(a)), "are " + SQL_PET_PLURALS[a]
        col = r.choice(SQL_COLORS)
        return col + " pets", ("color", "=", q(col)), "are " + col
    if table == "toys":
        if r.random() < 0.5:
            col = r.choice(SQL_COLORS)
            return col + " toys", ("color", "=", q(col)), "are " + col
        room = r.choice(SQL_ROOMS)
        return "toys in the " + room, ("room", "=", q(room)), "are in the " + room
    town = r.choice(SQL_TOWNS)
    return "kids from " + town, ("town", "=", q(town)), "live in " + town


def num_filter(r, table):
    """A numeric condition: (words after 'that'/'which', condition)."""
    if table == "pets":
        n = r.randint(1, 12)
        return r.choice([
            ("are older than %d" % n, ("age", ">", str(n))),
            ("are younger than %d" % n, ("age", "<", str(n))),
            ("are %d years old" % n, ("age", "=", str(n))),
        ])
    if table == "toys":
        n = r.randint(1, 20)
        return r.choice([
            ("cost more than %d coins" % n, ("price", ">", str(n))),
            ("cost less than %d coins" % n, ("price", "<", str(n))),
            ("cost %d coins" % n, ("price", "=", str(n))),
        ])
    if r.random() < 0.5:
        n = r.randint(4, 12)
        return r.choice([
            ("are older than %d" % n, ("age", ">", str(n))),
            ("are younger than %d" % n, ("age", "<", str(n))),
            ("are %d years old" % n, ("age", "=", str(n))),
        ])
    n = r.randint(1, 6)
    return r.choice([
        ("are in grade %d" % n, ("grade", "=", str(n))),
        ("are in a grade above %d" % min(n, 5), ("grade", ">", str(min(n, 5)))),
        ("are in a grade below %d" % max(n, 2), ("grade", "<", str(max(n, 2)))),
    ])


ORDERS = {  # table -> [(phrase, (col, dir))]
    "pets": [("from youngest to oldest", ("age", "UP")), ("from oldest to youngest", ("age", "DOWN")),
             ("sorted by name", ("name", "UP")), ("in reverse order of name", ("name", "DOWN"))],
    "toys": [("from cheapest to most expensive", ("price", "UP")),
             ("from most expensive to cheapest", ("price", "DOWN")),
             ("sorted by name", ("name", "UP")), ("sorted by room", ("room", "UP"))],
    "kids": [("from youngest to oldest", ("age", "UP")), ("from oldest to youngest", ("age", "DOWN")),
             ("sorted by name", ("name", "UP")), ("by grade, highest first", ("grade", "DOWN")),
             ("by grade, lowest first", ("grade", "UP"))],
}
SUPERLATIVES = {  # table -> [(adjective, (col, dir))]
    "pets": [("oldest", ("age", "DOWN")), ("youngest", ("age", "UP"))],
    "toys": [("cheapest", ("price", "UP")), ("most expensive", ("price", "DOWN"))],
    "kids": [("oldest", ("age", "DOWN")), ("youngest", ("age", "UP"))],
}


def pick_cols(r, table):
    names = [c for c, _ in SQL_TABLES[table]]
    k = 1 if r.random() < 0.6 else 2
    return r.sample(names, k)


def col_phrase(cols):
    return " and ".join(COL_WORD[c][0] for c in cols)


def sql_lookup(r, table):
    """A question about one named row."""
    if table == "pets":
        pet = r.choice(PET_NAMES)
        col, question = r.choice([
            ("age", "How old is the pet %s?" % pet), ("animal", "What kind of animal is the pet %s?" % pet),
            ("color", "What color is the pet %s?" % pet), ("age", "What is the age of the pet %s?" % pet)])
        return question, sql(table, [col], [("name", "=", q(pet))])
    if table == "toys":
        toy = r.choice(SQL_TOYS)
        col, question = r.choice([
            ("room", "Where is the %s?" % toy), ("room", "Which room is the %s in?" % toy),
            ("color", "What color is the %s?" % toy), ("price", "How much does the %s cost?" % toy),
            ("price", "What is the price of the %s?" % toy)])
        return question, sql(table, [col], [("name", "=", q(toy))])
    kid = r.choice(GIRLS + BOYS)
    col, question = r.choice([
        ("age", "How old is %s?" % kid), ("town", "Which town does %s live in?" % kid),
        ("grade", "What grade is %s in?" % kid), ("town", "Where does %s live?" % kid)])
    return question, sql(table, [col], [("name", "=", q(kid))])


def sql_example(r):
    table = r.choice(list(SQL_TABLES))
    sing, plur = ENTITY[table]
    kind = r.choice(["all", "cols", "text", "num", "count", "count_f", "order", "top", "text_order",
                     "two", "text_top", "num_cols", "lookup", "lookup"])
    if kind == "lookup":
        question, out = sql_lookup(r, table)
    elif kind == "all":
        question = r.choice(["Show all %s." % plur, "List every %s." % sing,
                             "Give me everything about the %s." % plur])
        out = sql(table, "*")
    elif kind == "cols":
        cols = pick_cols(r, table)
        question = r.choice(["What is the %s of each %s?" % (col_phrase(cols), sing),
                             "List the %s of every %s." % (col_phrase(cols), sing),
                             "Show the %s of all %s." % (col_phrase(cols), plur)])
        out = sql(table, cols)
    elif kind == "text":
        things, cond, pred = text_filter(r, table)
        question = r.choice(["Which %s %s?" % (plur, pred), "Show the names of the %s." % things,
                             "List the %s." % things])
        out = sql(table, ["name"], [cond])
    elif kind == "num":
        pred, cond = num_filter(r, table)
        question = r.choice(["Which %s %s?" % (plur, pred), "List the %s that %s." % (plur, pred),
                             "Show the names of %s that %s." % (plur, pred)])
        out = sql(table, ["name"], [cond])
    elif kind == "num_cols":
        pred, cond = num_filter(r, table)
        cols = pick_cols(r, table)
        question = "Show the %s of the %s that %s." % (col_phrase(cols), plur, pred)
        out = sql(table, cols, [cond])
    elif kind == "count":
        question = r.choice(["How many %s are there?" % plur, "Count the %s." % plur])
        out = sql(table, "COUNT")
    elif kind == "count_f":
        if r.random() < 0.5:
            things, cond, pred = text_filter(r, table)
            question = r.choice(["How many %s are there?" % things, "Count the %s." % things])
        else:
            pred, cond = num_filter(r, table)
            question = "How many %s %s?" % (plur, pred)
        out = sql(table, "COUNT", [cond])
    elif kind == "order":
        phrase, order = r.choice(ORDERS[table])
        question = r.choice(["List the names of all %s %s." % (plur, phrase), "Show every %s %s." % (sing, phrase)])
        out = sql(table, ["name"] if question.startswith("List") else "*", order=order)
    elif kind == "top":
        adj, order = r.choice(SUPERLATIVES[table])
        k = r.randint(1, 5)
        if k == 1:
            question = r.choice(["Which is the %s %s?" % (adj, sing), "Name the %s %s." % (adj, sing)])
        else:
            question = r.choice(["Which are the %s %s %s?" % (NUM_WORDS[k], adj, plur),
                                 "Name the %s %s %s." % (NUM_WORDS[k], adj, plur)])
        out = sql(table, ["name"], order=order, limit=k)
    elif kind == "text_order":
        things, cond, pred = text_filter(r, table)
        phrase, order = r.choice(ORDERS[table])
        question = "List the %s %s." % (things, phrase)
        out = sql(table, ["name"], [cond], order=order)
    elif kind == "two":
        things, cond1, pred1 = text_filter(r, table)
        pred2, cond2 = num_filter(r, table)
        question = r.choice(["Which %s %s?" % (things, pred2), "List the %s that %s." % (things, pred2)])
        out = sql(table, ["name"], [cond1, cond2])
    else:  # text_top
        things, cond, pred = text_filter(r, table)
        adj, order = r.choice(SUPERLATIVES[table])
        k = r.randint(1, 3)
        if k == 1:
            question = "Which one of the %s is the %s?" % (things, adj)
        else:
            question = "Which %s of the %s are the %s?" % (NUM_WORDS[k], things, adj)
        out = sql(table, ["name"], [cond], order=order, limit=k)
    prompt = "Translate to TinySQL.\nQuestion: %s\nTinySQL:" % question
    return prompt, " " + out + "\n"


# ---------------------------------------------------------------------------
# style: pirate talk
# ---------------------------------------------------------------------------

PIRATE_WORDS = {
    "my": "me", "you": "ye", "your": "yer", "is": "be", "are": "be",
    "friend": "matey", "friends": "mateys", "yes": "aye", "hello": "ahoy",
}
PIRATE_PREFIX = "Ahoy! "
PIRATE_SUFFIX = ", arr!"
WORD_RE = re.compile(r"[A-Za-z]+")


def pirate(text):
    """The reference rewrite; documented in tasks/README.md."""
    def sub(m):
        w = m.group(0)
        rep = PIRATE_WORDS.get(w.lower())
        if rep is None:
            return w
        return cap(rep) if w[0].isupper() else rep
    body = WORD_RE.sub(sub, text.strip())
    if body.endswith((".", "!")):
        body = body[:-1]
    return PIRATE_PREFIX + body + PIRATE_SUFFIX


# subject: (text, person) where person is "1s", "2", "3s", "1p", "3p"
def style_subject(r):
    k = r.random()
    if k < 0.12:
        return "I", "1s"
    if k < 0.3:
        return "you", "2"
    if k < 0.38:
        return "we", "1p"
    if k < 0.62:
        owner = r.choice(["my", "your", "my", "your", "the"])
        noun = r.choice(["friend", "dog", "cat", "sister", "brother", "mom", "dad", "teacher", "parrot", "boat"])
        return owner + " " + noun, "3s"
    if k < 0.75:
        owner = r.choice(["my", "your"])
        noun = r.choice(["friends", "ducks", "cats", "boots", "kites", "shells"])
        return owner + " " + noun, "3p"
    if k < 0.88:
        return r.choice(NAMES), "3s"
    return r.choice(NAMES) + " and " + r.choice(["my", "your"]) + " friend", "3p"


def be(person):
    return {"1s": "am", "2": "are", "3s": "is", "1p": "are", "3p": "are"}[person]


def style_sentence(r):
    subj, person = style_subject(r)
    obj = r.choice(OBJECT_POOL)
    place = r.choice(list(PLACES))
    owner = r.choice(["my", "your", "the", "a"])
    obj_np = article(obj) if owner == "a" else owner + " " + obj
    kind = r.random()
    if kind < 0.25:
        pred = "%s %s" % (be(person), r.choice(FEELINGS_GOOD + FEELINGS_BAD + ["hungry", "tired", "brave", "late"]))
    elif kind < 0.45:
        pred = "%s %s" % (be(person), PLACES[place][1])
    elif kind < 0.6:
        verb = r.choice(["looking for", "playing with", "holding", "cleaning", "painting"])
        pred = "%s %s %s" % (be(person), verb, obj_np)
    elif kind < 0.85:
        verb = r.choice(["found", "lost", "saw", "took", "gave me", "broke", "liked", "wanted"])
        pred = "%s %s" % (verb, obj_np)
    else:
        have = "has" if person == "3s" else "have"
        pred = "%s %s" % (have, article(r.choice(COLORS) + " " + obj))
    s = subj + " " + pred
    t = r.random()
    if t < 0.2:
        s += r.choice([" today", " at home", " near your house", " with my friend", " again"])
    elif t < 0.35:
        s += r.choice([", and you are my friend", ", but your boat is gone", ", so my dog is happy",
                       " because it is so windy", ", and my friends are here"])
    s = cap(s)
    k = r.random()
    if k < 0.08:
        first = s.split(" ")[0]
        if first in ("My", "Your", "You", "We", "The"):
            s = first.lower() + s[len(first):]
        s = r.choice(["Hello", "Yes", "Hello, my friend", "Yes, my friend"]) + ", " + s
    end = "!" if r.random() < 0.25 else "."
    return s + end


OBJECT_POOL = ["map", "hat", "boat", "coin", "key", "shell", "lamp", "kite", "rope", "drum",
               "bucket", "flag", "cake", "apple", "bell", "book", "scarf", "box", "ring", "whistle"]


def style_example(r):
    text = style_sentence(r)
    prompt = "Rewrite as a pirate.\nText: %s\nPirate:" % text
    return prompt, " " + pirate(text) + "\n"


def half_pirate(text):
    """The pirate frame around the sentence with its words left as they were."""
    body = text.strip()
    if body.endswith((".", "!")):
        body = body[:-1]
    return PIRATE_PREFIX + body + PIRATE_SUFFIX


def style_pair(r):
    """(prompt, chosen, rejected): the rewrite over a plain copy, or over the frame alone when
    the sentence has a word to change (half of those)."""
    prompt, chosen = style_example(r)
    text = prompt.split("\nText: ", 1)[1].rsplit("\nPirate:", 1)[0]
    half = " " + half_pirate(text) + "\n"
    rejected = half if half != chosen and r.random() < 0.5 else " " + text + "\n"
    return prompt, chosen, rejected


# ---------------------------------------------------------------------------
# qa: a question about a short story
# ---------------------------------------------------------------------------

QA_OBJECTS = ["ball", "kite", "shell", "hat", "key", "book", "coin", "feather", "stone", "cup",
              "ring", "map", "bell", "drum", "scarf", "box", "spoon", "marble", "robot", "doll"]
QA_PLACES = ["park", "beach", "river", "lake", "farm", "garden", "forest", "pond", "meadow",
             "market", "zoo", "hill", "field", "village", "orchard", "library", "barn", "harbor"]
QA_ANIMALS = ["dog", "cat", "fox", "owl", "frog", "duck", "horse", "cow", "pig", "goat", "rabbit",
              "bird", "mouse", "bear", "deer", "squirrel", "turtle", "sheep", "hen", "goose"]
QA_FEELINGS = ["happy", "sad", "tired", "scared", "proud", "hungry", "excited", "sleepy", "angry", "calm"]


def qa_example(r):
    n1 = r.choice(NAMES)
    n2 = r.choice([n for n in NAMES if n != n1])
    o1, o2 = r.sample(QA_OBJECTS, 2)
    c1, c2 = r.sample(COLORS, 2)
    a = r.choice(QA_ANIMALS)
    p = r.choice(QA_PLACES)
    f1, f2 = r.sample(QA_FEELINGS, 2)
    time = r.choice(["One day", "One morning", "On Saturday", "After school", "Last summer",
                     "One afternoon", "Yesterday"])
    s1 = r.choice([
        "%s, %s and %s went %s." % (time, n1, n2, PLACES[p][0]),
        "%s and %s went %s." % (n1, n2, PLACES[p][0]),
        "%s, %s went %s with %s." % (time, n1, PLACES[p][0], n2),
        "%s and %s played %s." % (n1, n2, PLACES[p][1]),
    ])
    # Who found what, and who saw the animal. Either child can do either.
    finder, seer = (n1, n2) if r.random() < 0.5 else (n2, n1)
    other = n2 if finder == n1 else n1
    find = r.choice([
        "%s found %s." % (finder, article(c1 + " " + o1)),
        "%s found %s under a tree." % (finder, article(c1 + " " + o1)),
        "%s picked up %s." % (finder, article(c1 + " " + o1)),
    ])
    second = r.random()
    if second < 0.5:
        rest = r.choice([
            "%s saw %s and felt %s." % (seer, article(a), f1),
            "%s saw %s, and it made %s %s." % (seer, article(a), "her" if gender(seer) == "f" else "him", f1),
        ])
        facts = {"seer": seer, "animal": a, "feel_who": seer}
    else:
        rest = r.choice([
            "%s had %s and felt %s." % (other, article(c2 + " " + o2), f1),
            "%s found %s and felt %s." % (other, article(c2 + " " + o2), f1),
        ])
        facts = {"other": other, "o2": o2, "c2": c2, "feel_who": other}
    sents = [s1, find, rest] if r.random() < 0.6 else [s1, rest, find]
    story = " ".join(sents)
    qs = [
        ("Who found the %s?" % o1 if "picked" not in find else "Who picked up the %s?" % o1, finder),
        ("What color was the %s?" % o1, c1),
        ("Where did %s go?" % n1 if "went" in s1 else "Where did %s play?" % n1, p),
        ("What did %s find?" % finder if "found" in find else "What did %s pick up?" % finder, o1),
        ("How did %s feel?" % facts["feel_who"], f1),
    ]
    if "animal" in facts:
        qs.append(("What animal did %s see?" % facts["seer"], facts["animal"]))
        qs.append(("Who saw the %s?" % facts["animal"], facts["seer"]))
    else:
        qs.append(("What color was the %s?" % facts["o2"], facts["c2"]))
    question, answer = r.choice(qs)
    prompt = "Story: %s\nQuestion: %s\nAnswer:" % (story, question)
    return prompt, " " + answer + "\n"


# ---------------------------------------------------------------------------
# Task descriptions
# ---------------------------------------------------------------------------

TASKS = {
    "json": dict(
        make=json_example,
        description="Pull the name, animal and place out of a sentence as a JSON object.",
        metric={"kind": "json_keys", "label": "valid JSON, right keys", "keys": JSON_KEYS},
        extra_metrics=[{"kind": "json_values", "label": "right values", "keys": JSON_KEYS}],
        max_new_tokens=64,
    ),
    "sql": dict(
        make=sql_example,
        description="Translate a plain question into TinySQL, a small query language made up for tinytune.",
        # The dialect itself is the main metric; exact match (the right query) is the harder one.
        metric={"kind": "tinysql_valid", "label": "valid TinySQL"},
        extra_metrics=[{"kind": "exact_match", "label": "exact match", "normalize": "whitespace"}],
        max_new_tokens=80,
        schema={t: [{"column": c, "type": ty} for c, ty in cols] for t, cols in SQL_TABLES.items()},
    ),
    "style": dict(
        make=style_example,
        description="Rewrite a sentence the way a pirate would say it (fixed word rules).",
        # Speaking the style is the main metric; exact match (every word rule right) is the harder one.
        metric={"kind": "style_markers", "label": "pirate markers", "prefix": PIRATE_PREFIX, "suffix": PIRATE_SUFFIX,
                "forbidden_words": list(PIRATE_WORDS)},
        extra_metrics=[{"kind": "exact_match", "label": "exact match", "normalize": "whitespace"}],
        max_new_tokens=64,
        rules={"prefix": PIRATE_PREFIX, "suffix": PIRATE_SUFFIX, "words": PIRATE_WORDS},
    ),
    "qa": dict(
        make=qa_example,
        description="Answer a question about a three-sentence story with one word.",
        metric={"kind": "exact_match", "label": "exact match", "normalize": "whitespace"},
        extra_metrics=[],
        max_new_tokens=16,
    ),
    # Preference pairs for DPO. The main metric asks the model itself: does it give the chosen
    # completion more probability than the rejected one? The extra ones grade what it writes.
    "pirate-prefs": dict(
        make=style_pair,
        description="Preference pairs for DPO: prefer the pirate rewrite over a plain copy or a half-done one.",
        metric={"kind": "preference_accuracy", "label": "prefers the chosen"},
        extra_metrics=[{"kind": "style_markers", "label": "pirate markers", "prefix": PIRATE_PREFIX, "suffix": PIRATE_SUFFIX,
                        "forbidden_words": list(PIRATE_WORDS)},
                       {"kind": "exact_match", "label": "exact match", "normalize": "whitespace"}],
        max_new_tokens=64,
        rules={"prefix": PIRATE_PREFIX, "suffix": PIRATE_SUFFIX, "words": PIRATE_WORDS},
    ),
}


def draw(make, rng, n, exclude):
    out, seen = [], set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > n * 200:
            raise SystemExit("could not draw %d distinct examples" % n)
        made = make(rng)
        prompt = made[0]
        if prompt in exclude or prompt in seen:
            continue
        seen.add(prompt)
        if len(made) == 3:
            out.append({"prompt": prompt, "chosen": made[1], "rejected": made[2]})
        else:
            out.append({"prompt": prompt, "completion": made[1]})
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(root, "www", "assets", "builtin", "tasks"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--only", help="one task name")
    args = ap.parse_args()

    for i, (name, t) in enumerate(TASKS.items()):
        if args.only and name != args.only:
            continue
        # Test and train come from different random streams; test is drawn first
        # and train skips any prompt already in test.
        test = draw(t["make"], random.Random(args.seed * 1000 + i * 2 + 1), args.test, set())
        train = draw(t["make"], random.Random(args.seed * 1000 + i * 2), args.train,
                     {row["prompt"] for row in test})
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        write_jsonl(os.path.join(d, "train.jsonl"), train)
        write_jsonl(os.path.join(d, "test.jsonl"), test)
        meta = {
            "name": name,
            "description": t["description"],
            "files": {"train": "train.jsonl", "test": "test.jsonl"},
            "metric": t["metric"],
            "extra_metrics": t["extra_metrics"],
            "max_new_tokens": t["max_new_tokens"],
            "stop": "\n",
            "decoding": "greedy",
            "examples": {"train": len(train), "test": len(test)},
        }
        for k in ("schema", "rules"):
            if k in t:
                meta[k] = t[k]
        with open(os.path.join(d, "task.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        longest = max(len(r["prompt"]) + max(len(r.get(k, "")) for k in ("completion", "chosen", "rejected")) for r in train + test)
        print("%s: %d train, %d test, longest prompt+completion %d chars" % (name, len(train), len(test), longest))


if __name__ == "__main__":
    main()
