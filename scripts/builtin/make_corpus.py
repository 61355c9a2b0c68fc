#!/usr/bin/env python3
"""Generate the pretraining corpus for the tinytune built-in base model.

The corpus is simple English made up by this script: short children's stories
(a goal, a problem, a resolution), descriptions of pets and places, and a few
little dialogues. It uses a vocabulary of about 1,300 words so that a model of
a few million parameters can learn it on a CPU in well under an hour.

Output: one story per line, separated by a single "\\n" (no blank lines). The
newline that ends a story is the same token that ends every task completion in
make_tasks.py, so the base model already knows it as "the end of a piece".

    python3 scripts/builtin/make_corpus.py            # writes www/assets/builtin/corpus/

Standard library only; the output depends only on the arguments (seeds and sizes),
not on the Python build or PYTHONHASHSEED.
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lexicon import (  # noqa: E402
    ANIMALS, BOYS, COLORS, COUNT_FOODS, FEELINGS_GOOD, FOODS, GIRLS, NUMBERS, OBJECTS,
    PET_NAMES, PETS, PLACES, RELATIVES, SIZES, SMALL_CRITTERS, TOWNS, TOYS, article, cap,
    count_phrase,
)

# ---------------------------------------------------------------------------
# Small template engine
# ---------------------------------------------------------------------------


class Ctx(dict):
    """Template slots. A missing slot is a bug in this script, so it raises."""

    def __missing__(self, key):
        raise KeyError("template slot {%s} is not set" % key)


def pronouns(prefix, gender):
    if gender == "f":
        he, him, his, self_ = "she", "her", "her", "herself"
    elif gender == "m":
        he, him, his, self_ = "he", "him", "his", "himself"
    else:
        he, him, his, self_ = "they", "them", "their", "themselves"
    return {
        prefix + "he": he, prefix + "He": cap(he),
        prefix + "him": him, prefix + "his": his, prefix + "His": cap(his),
        prefix + "self": self_,
    }


class Story:
    def __init__(self, rng, ctx):
        self.r = rng
        self.c = ctx
        self.out = []

    def fill(self, template):
        return template.format_map(self.c)

    def say(self, *alts):
        """Append one of the alternatives (a sentence or a few sentences)."""
        self.out.append(cap(self.fill(self.r.choice(alts))))

    def maybe(self, p, *alts):
        if self.r.random() < p:
            self.say(*alts)

    def quote(self, who, line, he=None, verb=None, reply=False):
        """Append a line of dialogue, in one of several shapes.

        who: how the speaker is named ("Mia", "the owl"); he: the speaker's
        pronoun, used only if given; line: what they say, ending in . ! or ?
        """
        line = cap(self.fill(line))
        who = self.fill(who)
        end = line[-1]
        if verb is None:
            if end == "?":
                verb = "asked"
            elif end == "!":
                verb = self.r.choice(["shouted", "cried", "said"])
            else:
                verb = self.r.choice(["said", "said", "said", "whispered", "replied" if reply else "said"])
        # The quoted part when the speech tag follows it: "Let's go," said Mia.
        inner = line[:-1] + "," if end == "." else line
        shape = self.r.random()
        if he and he not in self.c.get("ambiguous", ()) and shape < 0.25:
            s = '"%s" %s %s.' % (inner, he, verb)
        elif shape < 0.6 and not who[0].islower():
            s = '"%s" %s %s.' % (inner, verb, who)
        elif shape < 0.6:
            s = '"%s" %s %s.' % (inner, who, verb)
        elif shape < 0.85:
            s = '%s %s, "%s"' % (cap(who), verb, line)
        else:
            # Split a two-part line around the tag when it has two sentences.
            parts = split_two(line)
            if parts and not who[0].islower():
                a, b = parts
                a_in = a[:-1] + "," if a[-1] == "." else a
                s = '"%s" %s %s. "%s"' % (a_in, verb if a[-1] != "?" else "asked", who, b)
            else:
                s = '"%s" %s %s.' % (inner, who, verb)
        self.out.append(s)

    def text(self):
        return " ".join(self.out)


def split_two(line):
    for i, ch in enumerate(line[:-1]):
        if ch in ".!?" and line[i + 1] == " ":
            return line[: i + 1], line[i + 2:]
    return None


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------

WEATHER = {
    "sunny": (
        ["One sunny morning", "On a bright summer day", "One warm afternoon", "One sunny day",
         "Early one summer morning"],
        ["The sun was shining and the sky was blue.", "It was a warm and sunny day.",
         "The sky was clear, and the sun felt warm.", "The sun was bright, and the birds were singing."],
    ),
    "windy": (
        ["One windy afternoon", "On a windy autumn day", "One breezy morning"],
        ["The wind was blowing hard.", "It was a windy day, and the leaves danced in the air.",
         "The wind pushed the clouds across the sky.", "A strong wind shook the trees."],
    ),
    "rainy": (
        ["One rainy morning", "On a wet spring day", "One gray and rainy afternoon"],
        ["Rain was falling softly.", "Big drops of rain tapped on the window.",
         "It was gray and rainy outside.", "The rain made puddles everywhere."],
    ),
    "snowy": (
        ["One cold winter morning", "On a snowy day", "One frosty morning"],
        ["Soft white snow covered the ground.", "Snow was falling, and everything was white.",
         "It was very cold, and the snow was deep.", "Little snowflakes were falling from the sky."],
    ),
    "cloudy": (
        ["One gray morning", "One cloudy afternoon", "On a cool autumn day"],
        ["Big gray clouds hid the sun.", "The sky was gray, but it was not raining.",
         "It was a cool and cloudy day."],
    ),
    "foggy": (
        ["One foggy morning", "Early one misty morning"],
        ["Thick fog hid the trees.", "The fog was so thick that everything looked gray.",
         "A soft gray fog covered the ground."],
    ),
}
PLAIN_OPENERS = ["One day", "One morning", "One afternoon", "One evening", "Once upon a time",
                 "Last summer", "On Saturday", "After school one day", "Early one morning",
                 "Long ago"]

ENDINGS = [
    "That night, {N} went to bed with a big smile.",
    "It was the best day ever.",
    "{N} would never forget that day.",
    "When {he} got home, {he} told {his} friends all about it.",
    "That evening, {N} was tired but very happy.",
    "That night, {N} was sleepy but happy.",
    "{N} smiled all the way home.",
    "And that is how {N} learned something new that day.",
]

LESSONS = {
    "lost": ["it is okay to ask for help", "friends help each other", "we should take care of our things",
             "it helps to stop and think"],
    "activity": ["we should never give up", "trying again is how we learn", "friends help each other",
                 "it is okay to ask for help", "being patient can help"],
    "animal": ["being kind is important", "small things can make a big difference",
               "we should always help those in need"],
    "share": ["it is good to share", "a good friend is better than any toy", "sharing makes playing more fun"],
    "fear": ["being brave does not mean never being scared", "it is okay to be scared sometimes",
             "new things are not so scary after all"],
    "picnic": ["a rainy day can still be a fun day", "there is always a way to have fun"],
    "gift": ["the best gifts come from the heart", "we should never give up"],
    "fable": ["friends help each other", "two friends can do more than one", "it is good to share",
              "a clever idea can solve a big problem"],
}


def child(rng, exclude=()):
    while True:
        if rng.random() < 0.5:
            name, g = rng.choice(GIRLS), "f"
        else:
            name, g = rng.choice(BOYS), "m"
        if name not in exclude:
            return name, g


def base_ctx(rng, animal_hero=False):
    """Hero (N), a friend (F), a relative (R) and a town."""
    c = Ctx()
    if animal_hero:
        kind = rng.choice(SMALL_CRITTERS)
        name = rng.choice(PET_NAMES)
        g = rng.choice("fm")
        c["N"] = name
        c["kid"] = kind
        c.update(pronouns("", g))
        fkind = rng.choice([a for a in SMALL_CRITTERS if a != kind])
        fname = rng.choice([p for p in PET_NAMES if p != name])
        c["F"] = fname
        c["fkid"] = fkind
        c.update(pronouns("f", rng.choice("fm")))
    else:
        name, g = child(rng)
        c["N"] = name
        c["kid"] = "girl" if g == "f" else "boy"
        c.update(pronouns("", g))
        fname, fg = child(rng, exclude=(name,))
        c["F"] = fname
        c["fkid"] = "girl" if fg == "f" else "boy"
        c.update(pronouns("f", fg))
    rel, voc, rg = rng.choice(RELATIVES)
    c["R"] = rel
    c["Rv"] = voc
    c.update(pronouns("r", rg))
    c["town"] = rng.choice(TOWNS)
    prons = [c["he"], c["fhe"], c["rhe"]]
    c["ambiguous"] = [p for p in prons if prons.count(p) > 1]
    return c


def set_weather(s, kinds):
    w = s.r.choice(kinds)
    openers, descs = WEATHER[w]
    s.c["weather"] = w
    s.c["time"] = s.r.choice(openers) if s.r.random() < 0.6 else s.r.choice(
        ["One day", "One morning", "One afternoon", "On Saturday", "Early one morning"])
    s.c["wdesc"] = s.r.choice(descs)
    return w


def set_place(s, name, key="P"):
    to, at, outdoor, things = PLACES[name]
    s.c[key] = name
    s.c["to" + key] = to
    s.c["at" + key] = at
    t = s.r.sample(things, 2)
    s.c[key + "thing1"], s.c[key + "thing2"] = t[0], t[1]


def set_animal(s, name, key="A"):
    plural, sound, move, home, food, kind = ANIMALS[name]
    s.c[key] = name
    s.c["a" + key] = article(name)
    s.c[key + "s"] = plural
    s.c[key + "sound"] = sound or "looked around"
    s.c[key + "move"] = move
    s.c[key + "home"] = home
    s.c[key + "food"] = food
    adj = s.r.choice(SIZES + ["fluffy", "shy", "young", "old", "funny", "friendly"]
                     + ([s.r.choice(["brown", "gray", "white", "black", "orange", "spotted", "striped"])]
                        if kind in ("pet", "farm", "wild") else []))
    s.c[key + "adj"] = adj
    s.c["a" + key + "adj"] = article(adj + " " + name)


def set_object(s, name, key="O"):
    adj = s.r.choice(COLORS + OBJECT_ADJS + COLORS)
    s.c[key] = name
    s.c["a" + key] = article(name)
    s.c[key + "s"] = OBJECTS[name][0] if name in OBJECTS else name + "s"
    s.c[key + "adj"] = adj
    s.c["a" + key + "adj"] = article(adj + " " + name)


def opening(s, place_known=True):
    """One or two sentences that introduce the hero."""
    if s.c["kid"] in ("girl", "boy"):
        s.say(
            "Once upon a time, there was a little {kid} named {N}.",
            "{N} was a {kidadj} {kid} who lived in a small town called {town}.",
            "There was once a {kidadj} {kid} named {N}.",
            "{N} lived with {his} {R} in a little house in {town}.",
            "In the town of {town}, there lived a {kid} named {N}.",
            "{N} was {age} years old.",
            "{N} was a {kid} who loved to play outside.",
        )
    else:
        s.say(
            "Once upon a time, there was a little {kid} named {N}.",
            "There once was {akidadj} named {N}.",
            "{N} was a little {kid} who lived in {kidhome}.",
            "Deep in the forest, there lived {akid} named {N}.",
        )


def prepare_hero(s):
    s.c["kidadj"] = s.r.choice(["kind", "happy", "curious", "brave", "clever", "shy", "cheerful",
                                "busy", "quiet", "friendly"])
    age = s.r.randint(4, 9)
    s.c["age"] = NUMBERS[age] if s.r.random() < 0.7 else str(age)
    if s.c["kid"] not in ("girl", "boy"):
        s.c["akidadj"] = article(s.c["kidadj"] + " " + s.c["kid"])
        s.c["akid"] = article(s.c["kid"])
        s.c["kidhome"] = ANIMALS[s.c["kid"]][3]


def ending(s, kind, p_lesson=0.35, at_home=False):
    if s.r.random() < p_lesson:
        s.c["lesson"] = s.r.choice(LESSONS[kind])
        s.say("{N} learned that {lesson}.", "From that day on, {N} knew that {lesson}.",
              "That day, {N} learned that {lesson}.")
    elif at_home:
        s.say(*[e for e in ENDINGS if "home" not in e])
    else:
        s.say(*ENDINGS)


OBJECT_ADJS = ["old", "new", "shiny", "little", "big", "striped", "funny", "pretty", "spotted"]

# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------

OUT_SPOTS = ["under the bench", "behind a big rock", "in the tall grass", "next to the fence",
             "under a pile of leaves", "near the old tree", "by the gate", "inside a bush",
             "under a wooden table", "behind a flower pot"]
IN_SPOTS = ["under the bed", "behind the door", "in the toy box", "under the table",
            "on the top shelf", "inside a boot", "behind the sofa", "in the closet",
            "under a pillow", "in the laundry basket"]


def plot_lost(r):
    c = base_ctx(r, animal_hero=False)
    s = Story(r, c)
    prepare_hero(s)
    set_object(s, r.choice(TOYS + ["hat", "scarf", "key", "ring", "shell", "feather",
                                   "backpack", "mitten", "coin", "bell"]))
    outdoor = r.random() < 0.65
    if outdoor:
        set_place(s, r.choice(["park", "beach", "garden", "meadow", "playground", "field",
                               "forest", "backyard", "farm"]))
        spots = r.sample(OUT_SPOTS, 3)
    else:
        c["toP"], c["atP"], c["P"] = "home", "at home", "house"
        spots = r.sample(IN_SPOTS, 3)
    c["s1"], c["s2"], c["s3"] = spots
    set_weather(s, ["sunny", "windy", "cloudy"] if outdoor else ["rainy", "snowy", "cloudy", "sunny"])
    set_animal(s, r.choice(["dog", "puppy", "cat", "squirrel", "bird", "rabbit"] if outdoor
                           else ["dog", "puppy", "cat", "kitten", "mouse", "parrot"]))

    if r.random() < 0.5:
        opening(s)
    s.say("{N} had {aOadj}.", "{N} had {aOadj} that {he} loved very much.",
          "{N}'s favorite thing was {aOadj}.",
          "{N} had a special {O}. {His} {R} gave it to {him} for {his} birthday.",
          "{N} loved {his} {Oadj} {O}." if c["Oadj"] in COLORS else "{N} loved {his} {O} more than anything.")
    if outdoor:
        s.say("{time}, {N} took the {O} {toP}.", "{time}, {N} went {toP} with {his} {O}.",
              "{time}, {N} and {his} {R} went {toP}. {N} took {his} {O} too.")
        s.maybe(0.6, "{wdesc}")
        s.maybe(0.6, "{N} played {atP} all morning.", "{He} ran and played near {Pthing1}.",
                "{N} saw {Pthing1} and {Pthing2}.", "{He} had a lot of fun {atP}.")
    else:
        s.say("{time}, {N} stayed at home.", "{time}, {N} was playing at home.")
        s.maybe(0.6, "{wdesc}")
        s.maybe(0.5, "{He} played with {his} {O} all morning.", "{He} built a fort with {his} {O} in it.")
    s.say("But when it was time to go, the {O} was gone!",
          "Then {N} looked down. {His} {O} was not there!",
          "After a while, {N} could not find {his} {O}.",
          "Suddenly, {N} saw that {his} {O} was missing.")
    c["bad"] = r.choice(["sad", "worried", "upset"])
    s.say("{N} felt {bad}.", "{N} was very {bad}.", "{N} felt {bad} and did not know what to do.")
    s.quote("{N}", r.choice(["Where is my {O}?", "I lost my {O}!", "Oh no, my {O} is gone!",
                             "Has anyone seen my {O}?"]), he=c["he"])
    s.say("{He} looked {s1}, but it was not there.",
          "{He} looked {s1}. Then {he} looked {s2}. The {O} was not there.",
          "{He} searched {s1} and {s2}, but {he} could not find it.",
          "First {he} looked {s1}. It was not there either.")
    helper = r.random()
    if helper < 0.4:
        s.say("Then {his} friend {F} came by.", "Just then, {F} walked over.",
              "{His} friend {F} saw that {N} was {bad}.")
        s.quote("{F}", r.choice(["What is wrong, {N}?", "Why are you {bad}?", "Are you okay?"]), he=c["fhe"])
        s.quote("{N}", "I lost my {O}.", he=c["he"], reply=True)
        s.quote("{F}", r.choice(["Don't worry. I will help you look.", "I can help you find it.",
                                 "Let's look together.", "Quick, let's look for it!"]), he=c["fhe"])
        s.say("{N} and {F} looked everywhere.", "They looked together.", "The two friends searched and searched.")
        s.say("At last, {F} found the {O} {s3}!", "Then {F} pointed {s3}. There was the {O}!",
              "Soon {F} shouted, \"I see it!\" The {O} was {s3}.")
        if r.random() < 0.5:
            s.quote("{F}", r.choice(["Is this your {O}?", "Here is your {O}!", "Your {O} was {s3}!"]), he=c["fhe"])
        s.quote("{N}", r.choice(["Thank you, {F}!", "You found it! Thank you!", "Thank you so much!"]), he=c["he"])
        s.maybe(0.5, "{N} gave {F} a big hug.", "{N} and {F} laughed together.")
    elif helper < 0.75:
        s.say("Just then, {aAadj} came up to {N}.", "Suddenly, {aA} ran over to {N}.",
              "Then {N} saw {aA} nearby.")
        s.say("The {A} {Asound}.", "The {A} looked at {N} with big eyes.",
              "The {A} {Amove} away, and {N} ran after it.")
        s.maybe(0.3, "{N} was surprised.", "{N} was very surprised.")
        s.say("{N} followed the {A}. There, {s3}, was the {O}!",
              "The {A} came back with the {O}!", "{N} went to look {s3}, and there was the {O}!")
        s.quote("{N}", r.choice(["Thank you, little {A}!", "You found my {O}!", "Good {A}!"]), he=c["he"])
    else:
        s.say("{His} {R} came to help.", "Then {his} {R} came over.")
        s.quote("{his} {R}", r.choice(["Where did you last see it?", "Let's think. Where did you play?"]), he=c["rhe"])
        s.say("{N} thought hard.", "{N} stopped and thought.")
        s.say("Then {he} remembered! {He} ran and looked {s3}.", "Then {he} had an idea. {He} went to look {s3}.")
        s.say("The {O} was there!", "There was {his} {O}!", "And there it was!")
        s.quote("{N}", "I found it!", he=c["he"])
    good = r.choice(["happy", "glad", "thankful"])
    c["good"] = good
    s.say("{N} felt {good} again.", "{N} was so {good}.", "{N} held the {O} tight.")
    if r.random() < 0.4:
        s.say("From then on, {N} kept {his} {O} in a safe place.",
              "After that, {he} was always careful with {his} {O}.")
    else:
        ending(s, "lost", p_lesson=0.3, at_home=not outdoor)
    return s.text()


ACTIVITIES = [
    dict(
        places=["park", "hill", "beach", "meadow", "field"], weather=["windy"],
        goal=["wanted to fly {his} new kite", "wanted to fly a kite", "had a new {col} kite and wanted to fly it"],
        prep=["{He} held the string tight and started to run.", "{He} ran fast with the kite behind {him}."],
        problems=[
            (["But the kite got stuck in a tall tree.", "Then the kite flew into a tree and got stuck."],
             ["{helper} climbed up carefully and got the kite down.",
              "{helper} shook the branch, and the kite fell down."]),
            (["But the string broke, and the kite fell into the grass.", "Snap! The string broke."],
             ["{helper} helped {him} tie the string with a strong knot."]),
            (["But the kite went up and came down again.", "The kite fell down again and again."],
             ["{helper} showed {him} how to run against the wind.",
              "{helper} said to wait for a strong wind."]),
        ],
        success=["The kite went up and up, high into the sky.", "Soon the kite was dancing in the wind.",
                 "This time, the kite flew high above the trees."],
        col=True,
    ),
    dict(
        places=["beach"], weather=["sunny"],
        goal=["wanted to build a big sandcastle", "wanted to make the biggest sandcastle on the beach"],
        prep=["{He} got {his} bucket and {his} shovel.", "{He} filled {his} bucket with wet sand."],
        problems=[
            (["But a big wave came and washed the castle away.", "Then a wave rushed in and knocked the castle down."],
             ["{helper} said they should build it far from the water.",
              "{helper} helped {him} dig a ditch to stop the water."]),
            (["But the dry sand kept falling down.", "The castle kept falling because the sand was too dry."],
             ["{helper} showed {him} how to use wet sand.", "{helper} brought water in a bucket to make the sand wet."]),
        ],
        success=["Soon there was a tall castle with four towers.",
                 "At last, the sandcastle stood tall, with a shell on the top."],
    ),
    dict(
        places=["kitchen"], weather=["rainy", "snowy", "cloudy", "sunny"],
        goal=["wanted to bake {bake} for {his} {R}", "wanted to bake {bake}", "wanted to make {bake} all by {self}"],
        prep=["{He} got a big bowl and a spoon.", "{He} put flour and milk in the bowl."],
        problems=[
            (["But there were no eggs left.", "Then {he} saw that the eggs were all gone."],
             ["{helper} went next door and came back with three eggs."]),
            (["But {he} dropped the bowl, and flour went everywhere.", "Oops! The bowl fell, and there was flour on the floor."],
             ["{helper} helped {him} clean up, and they started again.",
              "They were cleaning for a long time. Then they started again."]),
            (["But the oven was too hot, and the first one got burned.", "The first try was burned and black."],
             ["{helper} showed {him} how to set the oven just right."]),
        ],
        success=["Soon the kitchen smelled sweet and warm.", "This time, {thebake} came out soft and golden.",
                 "At last, {thebake} {bakewas} ready, and {bakeit} tasted very good."],
    ),
    dict(
        places=["river", "lake", "pond"], weather=["sunny", "cloudy", "foggy"],
        goal=["wanted to catch a fish", "wanted to catch a big fish for dinner"],
        prep=["{He} sat on the bank with {his} fishing rod.", "{He} threw the line into the water and waited."],
        problems=[
            (["But the fish did not come.", "{He} waited and waited, but nothing happened."],
             ["{helper} said that fish like quiet, so they sat very still."]),
            (["A fish took the bait, but it swam away.", "{He} felt a pull, but the fish got away."],
             ["{helper} showed {him} how to pull the line slowly."]),
        ],
        success=["At last, {he} caught a big silver fish!", "Then the line pulled hard, and {he} caught a fish!"],
    ),
    dict(
        places=["garden", "backyard"], weather=["sunny", "cloudy", "rainy"],
        goal=["wanted to grow {his} own carrots", "wanted to plant a flower garden", "wanted to grow a tall sunflower"],
        prep=["{He} dug small holes and put the seeds in.", "{He} planted the seeds in a neat row."],
        problems=[
            (["But the birds came and ate the seeds.", "The next morning, the birds were eating the seeds!"],
             ["{helper} helped {him} make a funny scarecrow.", "{helper} put a net over the seeds."]),
            (["But for many days, nothing grew.", "{He} waited, but the ground stayed brown."],
             ["{helper} said the seeds needed water every day, so {he} watered them each morning."]),
        ],
        success=["Soon little green leaves came up.", "After a few weeks, the garden was full of color.",
                 "One day, {he} saw the first green shoots."],
    ),
    dict(
        places=["park", "playground"], weather=["sunny", "cloudy"],
        goal=["wanted to learn to ride {his} new bike", "wanted to ride a bike without help"],
        prep=["{He} sat on the bike and pushed the pedals.", "{He} held the handles and started to pedal."],
        problems=[
            (["But the bike wobbled, and {he} fell down.", "The bike tipped over, and {he} hurt {his} knee."],
             ["{helper} held the back of the seat and ran next to {him}.",
              "{helper} said to look ahead, not down."]),
        ],
        success=["Soon {he} was riding all by {self}!", "At last, {he} rode all the way around the park."],
    ),
    dict(
        places=["orchard", "garden"], weather=["sunny", "windy", "cloudy"],
        goal=["wanted to pick the red apples from the tall tree", "wanted the big apples at the top of the tree"],
        prep=["{He} jumped as high as {he} could.", "{He} stood on {his} toes and reached up."],
        problems=[
            (["But the apples were too high.", "But {he} could not reach them."],
             ["{helper} brought a ladder and held it still.", "{helper} lifted {him} up on {hhis} shoulders."]),
        ],
        success=["{He} picked a big red apple and took a bite.", "Soon the basket was full of apples."],
        people_only=True,
    ),
    dict(
        places=["backyard", "park"], weather=["snowy"],
        goal=["wanted to build a snowman", "wanted to make the biggest snowman in {town}"],
        prep=["{He} rolled a big ball of snow.", "{He} rolled the snow into three round balls."],
        problems=[
            (["But the snowman had no nose.", "Then {he} saw that there was nothing for the nose."],
             ["{helper} brought an orange carrot from the kitchen."]),
            (["But the top ball was too heavy to lift.", "{He} could not lift the head onto the body."],
             ["{helper} helped {him} lift it up."]),
        ],
        success=["The snowman had a carrot nose, two stone eyes and a big smile.",
                 "Soon a tall snowman stood in the snow, wearing an old hat."],
    ),
    dict(
        places=["garden", "park", "kitchen"], weather=["sunny", "rainy", "cloudy"],
        goal=["wanted to paint a picture of {aAname}", "wanted to paint a picture for {his} {R}"],
        prep=["{He} got {his} paints and a big sheet of paper.", "{He} dipped {his} brush in {col} paint.",
              "{He} was painting for a long time, and {he} was very careful."],
        problems=[
            (["But {he} spilled the paint, and there was a big spot on the paper.", "Oops! A big drop of paint fell on the picture."],
             ["{helper} said the spot looked like a flower, so {he} turned it into a flower."]),
        ],
        success=["The picture was bright and beautiful.", "When it was done, everyone said it was the best picture."],
        col=True, animal=True,
    ),
    dict(
        places=["hill", "mountain"], weather=["sunny", "cloudy", "windy"],
        goal=["wanted to climb to the top of the hill", "wanted to see the town from the top"],
        prep=["{He} started up the long path.", "{He} walked up and up."],
        problems=[
            (["But the path was steep, and {his} legs got tired.", "Halfway up, {he} was too tired to go on."],
             ["{helper} said they could rest for a while and drink some water."]),
            (["But the rocks were slippery.", "Then {he} slipped on a wet rock."],
             ["{helper} held {his} hand on the slippery part."]),
        ],
        success=["At last, {he} reached the top and saw the whole town below.",
                 "From the top, {he} could see houses, fields and the blue lake."],
    ),
    dict(
        places=["park", "field", "meadow"], weather=["sunny", "cloudy"],
        goal=["wanted to win the big race", "wanted to run in the big race"],
        prep=["{He} stood at the start line.", "Ready, set, go! {He} ran as fast as {he} could."],
        problems=[
            (["But {he} tripped on a stone and fell.", "Then {he} fell down in the grass."],
             ["{helper} cheered, \"Get up! You can do it!\""]),
        ],
        success=["{He} got up and ran to the end.", "{He} did not win, but {he} finished the race with a big smile."],
    ),
]


def plot_activity(r):
    animal_hero = r.random() < 0.15
    c = base_ctx(r, animal_hero=animal_hero)
    s = Story(r, c)
    prepare_hero(s)
    act = r.choice(ACTIVITIES)
    set_place(s, r.choice(act["places"]))
    set_weather(s, act["weather"])
    c["col"] = r.choice(COLORS)
    c["aAname"] = article(r.choice(list(ANIMALS)))
    bake = r.choice([("a cake", "the cake", True), ("cookies", "the cookies", False),
                     ("an apple pie", "the pie", True), ("muffins", "the muffins", False),
                     ("a loaf of bread", "the bread", True)])
    c["bake"], c["thebake"] = bake[0], bake[1]
    c["bakewas"], c["bakeit"] = ("was", "it") if bake[2] else ("were", "they")
    who = r.random()
    if who < 0.45 or (animal_hero and who < 0.8):
        c["helper"] = c["F"] if not animal_hero else c["F"] + " the " + c["fkid"]
        helper_pron = c["fhe"]
    elif who < 0.8:
        c["helper"] = c["his"] + " " + c["R"]
        helper_pron = c["rhe"]
    elif act.get("people_only"):
        c["helper"] = c["F"]
        helper_pron = c["fhe"]
    else:
        c["helper"] = "owl"
        helper_pron = "it"
    c["hhis"] = {"she": "her", "he": "his", "they": "their"}.get(helper_pron, "its")
    c["goal"] = s.fill(r.choice(act["goal"]))
    if r.random() < 0.6:
        opening(s)
    s.say("{time}, {N} {goal}.", "{N} had a plan. {He} {goal}.", "{time}, {N} went {toP}. {He} {goal}.")
    s.maybe(0.5, "{wdesc}")
    if "went" not in s.out[-1] and "went" not in s.out[-2 if len(s.out) > 1 else -1] and r.random() < 0.6:
        s.say("{He} went {toP}.", "So {he} went {toP}.")
    s.say(*act["prep"])
    probs, fixes = r.choice(act["problems"])
    s.say(*probs)
    bad = r.choice(["sad", "upset", "worried", "grumpy", "nervous"])
    c["bad"] = bad
    s.say("{N} felt {bad}.", "{N} was {bad}.", "Now {N} was {bad}.", "{N} sat down. {He} felt {bad}.")
    if r.random() < 0.7:
        s.quote("{N}", r.choice(["I can't do it!", "Oh no!", "This is too hard.", "What can I do now?",
                                 "I will never do it."]), he=c["he"])
    if c["helper"] == "owl":
        s.say("Just then, a wise old owl landed on a branch nearby.", "Then a wise old owl flew down.")
        s.quote("the owl", r.choice(["Don't give up, little one.", "I have an idea.", "Let me help you."]))
        c["helper"] = "the owl"
    else:
        s.say("Then {helper} came over.", "Just then, {helper} came by.")
        if r.random() < 0.6:
            s.quote(c["helper"], r.choice(["Let me help you.", "Don't give up.", "I know what to do.",
                                           "We can fix it together."]), he=helper_pron)
    s.say(*fixes)
    s.say("{N} tried again.", "Then {N} tried one more time.", "So {N} tried again, and this time it worked.")
    s.say(*act["success"])
    good = r.choice(FEELINGS_GOOD[:4])
    c["good"] = good
    s.say("{N} felt very {good}.", "{N} was so {good}.", "{N} jumped up and down.")
    if r.random() < 0.5:
        s.quote("{N}", r.choice(["Thank you for helping me!", "We did it!", "I did it!", "Look at that!"]), he=c["he"])
    ending(s, "activity")
    return s.text()


TROUBLES = [
    dict(animals=["kitten", "cat"], places=["garden", "park", "backyard"],
         find=["{N} heard a little {Asound0} from a tall tree.", "{N} saw {aA} high up in a tree."],
         trouble=["The {A} was stuck and could not get down.", "The poor {A} was too scared to climb down."],
         fix=["{N} ran to get {his} {R}. {RHe} brought a ladder and climbed up.",
              "{N} got a ladder, and {his} {R} held it steady while {he} climbed."],
         after=["Soon the {A} was safe on the ground.", "Then the {A} jumped into {N}'s arms."]),
    dict(animals=["bird"], places=["garden", "park", "forest", "backyard"],
         find=["{N} saw a little bird on the ground.", "Under a bush, {N} found a small bird."],
         trouble=["The bird had a hurt wing and could not fly.", "One of its wings was hurt."],
         fix=["{N} put the bird in a box with a soft blanket. Every day, {he} gave it seeds and water.",
              "{N} and {his} {R} made a warm bed for the bird and gave it seeds."],
         after=["After a week, the wing was better, and the bird flew up into the sky.",
                "One morning, the bird flapped its wings and flew away."]),
    dict(animals=["duck", "goose"], places=["pond", "lake", "river", "park"],
         find=["{N} saw a baby {A} all alone.", "{N} heard a tiny {A} crying near the water."],
         trouble=["It had lost its mother.", "The little {A} could not find its family."],
         fix=["{N} walked along the water and looked for the mother {A}.",
              "{N} gently followed the little {A} along the bank."],
         after=["Soon they found the mother {A}, and the baby swam to her.",
                "At last, the family was together again."]),
    dict(animals=["puppy", "dog"], places=["park", "market", "village", "bridge"],
         find=["{N} saw {aA} sitting alone and shaking.", "{aA} came running up to {N}."],
         trouble=["The {A} was lost.", "The poor {A} did not know the way home."],
         fix=["{N} looked at the {A}'s collar. It had a name and a street on it.",
              "{N} and {his} {R} read the tag on the {A}'s collar."],
         after=["They walked the {A} home, and its owner was so happy.",
                "They took the {A} back to its family, and everyone cheered."]),
    dict(animals=["hedgehog", "rabbit", "fox"], places=["garden", "forest", "field", "backyard"],
         find=["{N} heard a rustle near the fence.", "{N} saw {aA} behind the shed."],
         trouble=["The {A} was caught in an old net.", "The {A} was tangled in a long string."],
         fix=["{N} called {his} {R}, and they cut the net very carefully.",
              "Slowly and gently, {N} and {his} {R} set the {A} free."],
         after=["The {A} looked at them and then {Amove} away.", "The {A} was free, and it {Amove} off into the grass."]),
    dict(animals=["frog", "turtle", "fish"], places=["garden", "backyard", "park"],
         find=["{N} found {aA} in an old bucket.", "{N} saw {aA} in a little puddle."],
         trouble=["The water was almost gone.", "The sun was hot, and the {A} needed water."],
         fix=["{N} carried the {A} carefully to the pond.", "{N} and {F} took the {A} to the river."],
         after=["The {A} {Amove} away happily.", "Splash! The {A} was home again."]),
    dict(animals=["squirrel", "mouse", "bird"], places=["park", "forest", "garden"],
         find=["{N} saw {aA} looking for food in the snow.", "{N} saw a thin little {A} by the path."],
         trouble=["It was hungry, and there was no food anywhere.", "The {A} could not find any food."],
         fix=["{N} went home and brought some {food}.", "{N} put some {food} on a flat stone."],
         after=["The {A} ate it all and looked very happy.", "Every day after that, {N} left some {food} for the {A}."]),
]


def plot_help_animal(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    t = r.choice(TROUBLES)
    set_animal(s, r.choice(t["animals"]))
    c["Asound0"] = "cry"
    c["RHe"] = c["rHe"]
    c["food"] = r.choice(["seeds", "nuts", "bread crumbs", "berries"])
    set_place(s, r.choice(t["places"]))
    set_weather(s, ["sunny", "cloudy", "windy", "foggy"] if "snow" not in t["find"][0] else ["snowy"])
    if r.random() < 0.5:
        opening(s)
    s.say("{time}, {N} was walking {atP}.", "{time}, {N} went {toP} with {his} {R}.",
          "{time}, {N} and {F} were playing {atP}.")
    s.maybe(0.5, "{wdesc}")
    s.say(*t["find"])
    s.say(*t["trouble"])
    s.quote("{N}", r.choice(["Oh no! Poor little {A}!", "We have to help it!", "Don't be scared, little {A}.",
                             "What can we do?"]), he=c["he"])
    s.say(*t["fix"])
    s.say(*t["after"])
    c["good"] = r.choice(["happy", "proud", "glad"])
    s.say("{N} felt {good}.", "{N} smiled. {He} felt very {good}.", "{N} was {good} that the {A} was safe.")
    s.maybe(0.4, "{His} {R} said that {N} had a kind heart.", "Helping the {A} was the best part of the day.")
    ending(s, "animal", p_lesson=0.25)
    return s.text()


def plot_share(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    set_object(s, r.choice(TOYS))
    set_place(s, r.choice(["park", "playground", "school", "backyard", "garden", "beach"]))
    set_weather(s, ["sunny", "cloudy"])
    if r.random() < 0.4:
        opening(s)
    s.say("{time}, {N} and {F} were playing {atP}.", "{N} and {his} friend {F} went {toP}.",
          "{time}, {N} went {toP} to play with {F}.")
    s.say("{N} had {aOadj}.", "{F} brought {aOadj}.", "There was {aOadj} on the ground.")
    s.say("Both of them wanted to play with it.", "{N} wanted the {O}, and {F} wanted it too.")
    s.quote("{N}", r.choice(["It is my turn!", "Give it to me!", "I want the {O}!"]), he=c["he"])
    s.quote("{F}", r.choice(["No, it is my turn!", "I had it first!", "But I want it too!"]), he=c["fhe"])
    s.say("They pulled and pulled.", "They both held on to the {O}.", "They started to shout.")
    s.maybe(0.5, "Then the {O} fell on the ground, and nobody was having fun.",
            "Soon they were both {sad}.".replace("{sad}", r.choice(["sad", "angry", "grumpy", "upset"])))
    if r.random() < 0.5:
        s.say("{N}'s {R} came over.", "Then {N}'s {R} walked up to them.")
        s.quote("{his} {R}", r.choice(["Why don't you take turns?", "You can play with it together.",
                                 "Sharing is more fun than fighting."]), he=c["rhe"])
    else:
        s.say("Then {N} had an idea.", "{N} stopped and thought for a moment.")
        s.quote("{N}", r.choice(["Let's take turns!", "We can play with it together!", "You can go first."]),
                he=c["he"])
    s.say("So they took turns with the {O}.", "They played a game with the {O} together.",
          "{F} played first, and then {N} played.")
    if r.random() < 0.5:
        s.quote("{F}", r.choice(["Now it is your turn, {N}.", "Your turn!", "Here, it is your turn."]), he=c["fhe"])
    s.say("It was much more fun that way.", "Soon they were laughing again.", "They had a great time.")
    s.maybe(0.6, "{N} and {F} played until the sun went down.", "After that, they always shared their toys.")
    ending(s, "share", p_lesson=0.5)
    return s.text()


FEARS = [
    ("the dark", ["When {his} {R} turned off the light, the room was very dark.",
                  "At night, the room was dark, and the shadows looked big."],
     ["{His} {R} gave {him} a small lamp shaped like a star.", "{His} {R} showed {him} that the shadow was only {his} coat."],
     "Now the dark did not seem scary at all."),
    ("thunder", ["A storm came, and the thunder went boom!", "Boom! The thunder was very loud."],
     ["{His} {R} said that thunder is just the sound of the storm, and it cannot hurt you.",
      "{His} {R} held {him} close and counted the seconds between the flash and the boom."],
     "Soon the storm went away, and {N} was not scared anymore."),
    ("deep water", ["The water at the lake looked deep and dark.", "{N} did not want to go in the water."],
     ["{His} {R} held {his} hands and showed {him} how to kick.", "{His} {R} gave {him} a ring to float on."],
     "Soon {N} was splashing and laughing in the water."),
    ("the big dog next door", ["The big dog next door barked loudly.", "The dog next door was very big."],
     ["{His} {R} showed {him} how to hold out a hand so the dog could sniff it.",
      "The neighbor said the dog was friendly and only wanted to play."],
     "The big dog wagged its tail and licked {N}'s hand."),
    ("the tall slide", ["The slide at the park was very tall.", "{N} looked up at the tall slide."],
     ["{F} went first and waved from the bottom.", "{His} {R} waited at the bottom with open arms."],
     "Whoosh! {N} went down the slide, and it was fun."),
]


def plot_fear(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    fear, scene, help_, end = r.choice(FEARS)
    c["fear"] = fear
    c["RHe"] = c["rHe"]
    set_weather(s, ["rainy"] if fear == "thunder" else ["sunny", "cloudy"])
    if r.random() < 0.6:
        opening(s)
    s.say("{N} was afraid of {fear}.", "There was one thing {N} did not like: {fear}.",
          "{N} was brave, but {he} was scared of {fear}.")
    s.say(*scene)
    s.say("{N} felt scared.", "{His} heart beat fast.", "{N} wanted to hide.")
    s.quote("{N}", r.choice(["I am scared!", "I don't like it!", "Can you help me?"]), he=c["he"])
    s.say("{His} {R} came and sat next to {him}.", "{His} {R} gave {him} a warm hug.")
    s.quote("{his} {R}", r.choice(["It is okay to be scared.", "You are braver than you think.",
                             "I am here with you."]), he=c["rhe"])
    s.say(*help_)
    s.say("{N} took a deep breath.", "{N} tried to be brave.", "Slowly, {N} felt better.",
          "{N} took a deep breath and tried to stay calm.")
    s.say(end)
    s.maybe(0.5, "{N} felt proud of {self}.", "{N} smiled. {He} was not afraid anymore.")
    if r.random() < 0.3:
        s.say("After that day, {N} always felt a little braver.")
    else:
        ending(s, "fear", p_lesson=0.2)
    return s.text()


def plot_trip(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    p = r.choice(["farm", "zoo", "beach", "lake", "forest", "market", "island", "village", "harbor",
                  "mountain", "library", "bakery", "orchard"])
    set_place(s, p)
    set_weather(s, ["sunny", "cloudy", "windy"])
    animals = {
        "farm": ["cow", "pig", "sheep", "hen", "horse", "goat", "duck"],
        "zoo": ["lion", "tiger", "elephant", "monkey", "seal", "parrot", "bear"],
        "beach": ["crab", "seal", "bird"], "lake": ["duck", "goose", "fish", "frog"],
        "forest": ["deer", "squirrel", "owl", "rabbit", "fox"], "market": ["dog", "cat", "hen"],
        "island": ["crab", "bird", "turtle"], "village": ["dog", "cat", "hen", "goose"],
        "harbor": ["seal", "bird", "fish"], "mountain": ["goat", "bird", "deer"],
        "library": ["cat", "mouse"], "bakery": ["cat", "dog", "mouse"], "orchard": ["bee", "bird", "squirrel"],
    }[p]
    a1, a2 = r.sample(animals, 2)
    n1, n2 = r.randint(2, 9), r.randint(1, 5)
    c["saw1"] = count_phrase(n1, a1)
    c["saw2"] = article(a2) if n2 == 1 else count_phrase(n2, a2)
    c["was2"] = "was" if n2 == 1 else "were"
    set_animal(s, a1)
    c["food"] = r.choice(COUNT_FOODS)
    c["foods"] = FOODS[c["food"]]
    c["afood"] = article(c["food"])
    if r.random() < 0.4:
        opening(s)
    s.say("{time}, {N} and {his} {R} went {toP}.", "{time}, {N}'s {R} took {him} {toP}.",
          "{time}, {N} went {toP} with {his} {R} and {his} friend {F}.")
    s.maybe(0.6, "{wdesc}")
    s.say("{atP}, they saw {Pthing1} and {Pthing2}.", "There was so much to see, like {Pthing1} and {Pthing2}.",
          "{N} looked at {Pthing1}. Then {he} looked at {Pthing2}.")
    s.say("They saw {saw1} and {saw2}.", "{N} counted {saw1}.", "{N} saw {saw1}. There {was2} also {saw2}.")
    s.maybe(0.6, "One of the {As} {Asound}.", "The {As} {Amove} around.", "The {As} liked to eat {Afood}.")
    s.maybe(0.3, "{N} was holding {his} {R}'s hand.", "{N} was holding a little map.")
    s.quote("{N}", r.choice(["Look at that!", "Can we stay here all day?", "This is so much fun!",
                             "How many {As} are there?"]), he=c["he"])
    ev = r.random()
    if ev < 0.3:
        s.say("At noon, they sat down and ate {foods}.", "For lunch, they ate {foods} under a tree.",
              "{His} {R} bought {afood} for {him}.")
    elif ev < 0.55 and PLACES[p][2]:
        s.say("Then it started to rain!", "Suddenly, the sky got dark, and rain began to fall.")
        s.say("They ran and hid under a tree until the rain stopped.", "They laughed and ran back to the car.")
    elif ev < 0.8:
        s.say("{N} found a shiny stone and put it in {his} pocket.",
              "{N} found a pretty feather and kept it.",
              "A kind man gave {N} a little {col} flag.".replace("{col}", r.choice(COLORS)))
    else:
        s.say("{N} made a new friend named {F}.", "There {N} met a {fkid} named {F}, and they played together.")
    s.say("When the sun went down, it was time to go home.", "In the evening, they drove home.",
          "At the end of the day, they walked home slowly.")
    s.say("{N} was tired, but {he} was very happy.", "{N} fell asleep in the car.",
          "{N} said it was the best trip ever.")
    return s.text()


FABLE_WANTS = [
    ("cheese", "the big piece of cheese on the kitchen table", "a cat was sitting next to it"),
    ("nuts", "the nuts at the top of the old tree", "the branch was too thin to hold {him}"),
    ("berries", "the sweet berries on the other side of the river", "the river was too wide to cross"),
    ("honey", "the honey in the tall hive", "the bees were buzzing angrily"),
    ("carrots", "the carrots in the farmer's garden", "a tall fence was all around the garden"),
    ("corn", "the corn in the big barn", "the door of the barn was shut"),
    ("apples", "the red apples on the highest branch", "they were too high to reach"),
]


def plot_fable(r):
    c = base_ctx(r, animal_hero=True)
    s = Story(r, c)
    prepare_hero(s)
    food, want, obstacle = r.choice(FABLE_WANTS)
    c["food"] = food
    mass = food in ("cheese", "honey", "corn")
    c["it"] = "it" if mass else "them"
    c["is"] = "is" if mass else "are"
    c["was"] = "was" if mass else "were"
    c["want"] = want
    c["lesson"] = r.choice(LESSONS["fable"])
    c["obstacle"] = s.fill(obstacle)
    set_weather(s, ["sunny", "cloudy", "windy", "snowy"])
    if c["weather"] == "snowy":
        c["hungry"] = "Winter had come, and there was little food."
    else:
        c["hungry"] = r.choice(["{N} was very hungry.", "{N}'s tummy was rumbling."])
    opening(s)
    s.say(c["hungry"])
    s.say("{N} wanted {want}.", "{N} had seen {want}, and {he} wanted some.")
    s.say("But {obstacle}.", "There was one problem: {obstacle}.")
    s.say("{N} sat down and thought.", "{N} did not know what to do.", "{N} felt sad.")
    s.say("Then {his} friend {F} the {fkid} came by.", "Just then, {F} the {fkid} came along.")
    s.quote("{F}", r.choice(["Why do you look so sad?", "What is the matter, {N}?", "Can I help?"]), he=c["fhe"])
    s.quote("{N}", r.choice(["I want some {food}, but I cannot get {it}.", "I am hungry, and the {food} {is} too hard to get."]),
            he=c["he"], reply=True)
    s.quote("{F}", r.choice(["I have an idea!", "Let's work together.", "Two friends can do more than one."]),
            he=c["fhe"])
    s.say("{F} and {N} worked together.", "So the two friends made a plan.",
          "{F} helped, and {N} was very clever.")
    s.say(r.choice([
        "{F} kept watch while {N} went quietly.",
        "They found a long stick and made a bridge.",
        "They waited until night, when everything was quiet.",
        "{F} made a loud noise, and while everyone looked away, {N} got the {food}.",
    ]))
    s.say("Soon they had all the {food} they needed.", "At last, {N} had some {food}.",
          "In the end, there {was} enough {food} for both of them.")
    s.say("{N} shared the {food} with {F}.", "They sat together and ate the {food}.")
    s.say("{N} learned that {lesson}.", "From that day on, {N} and {F} were best friends.",
          "It was the best meal {N} ever had.")
    return s.text()


def plot_picnic(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    set_place(s, r.choice(["park", "meadow", "beach", "garden", "hill", "lake"]))
    c["food"] = r.choice(COUNT_FOODS)
    c["foods"] = FOODS[c["food"]]
    f2 = r.choice([f for f in FOODS if f != c["food"]])
    c["food2"] = FOODS[f2] or f2
    c["game"] = r.choice(["a board game", "hide and seek", "a guessing game", "cards", "a drawing game"])
    if r.random() < 0.4:
        opening(s)
    s.say("{N} and {his} {R} planned a picnic {atP}.", "{N} and {his} {R} wanted to have a picnic {atP}.",
          "On Saturday, {N} and {his} {R} were going to have a picnic {atP}.")
    s.say("They packed {foods}, {food2} and a big blanket.", "{N} put {foods} and {food2} in a basket.")
    s.say("But when they opened the door, it was raining!", "But then dark clouds came, and it started to rain.")
    s.quote("{N}", r.choice(["Oh no! Now we can't go!", "Why did it have to rain today?", "Our picnic is ruined!"]),
            he=c["he"])
    s.say("{N} felt {bad}.".replace("{bad}", r.choice(["sad", "grumpy", "upset"])), "{N} looked out of the window.")
    if r.random() < 0.5:
        s.say("Then {his} {R} had an idea.")
        s.quote("{his} {R}", r.choice(["Let's have the picnic inside!", "We can make a picnic on the floor!"]), he=c["rhe"])
    else:
        s.say("Then {N} had an idea.")
        s.quote("{N}", r.choice(["Let's have the picnic inside!", "We can make a picnic on the floor!"]), he=c["he"])
    s.say("They put the blanket on the living room floor.", "They made a picnic on the floor and played {game}.")
    s.say("They ate {foods} and played {game}.", "It was warm and cozy inside.")
    s.maybe(0.4, "They were waiting for the rain to stop.", "{N} was waiting by the window.")
    s.say("After a while, the rain stopped.", "Later, the sun came out again.")
    s.maybe(0.7, "There was a big rainbow in the sky!", "A beautiful rainbow stretched over the town.")
    s.say("So they went {toP} after all.", "They ran outside and jumped in the puddles.")
    ending(s, "picnic", p_lesson=0.2)
    return s.text()


def plot_gift(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    gift = r.choice([
        ("a picture", "drew a picture of the whole family", "The dog walked on the picture with muddy feet."),
        ("cookies", "baked a plate of cookies", "The dog ate half of the cookies!"),
        ("a card", "made a card with glue and {col} paper", "Oops, {he} spilled juice all over the card."),
        ("flowers", "picked a bunch of {col} flowers", "But the flowers started to droop in the sun."),
        ("a necklace", "made a necklace from little shells", "Then the string broke, and the shells fell everywhere."),
    ])
    c["col"] = r.choice(["red", "yellow", "pink", "purple", "blue", "white"])
    c["gift"], c["made"], c["oops"] = gift[0], s.fill(gift[1]), s.fill(gift[2])
    c["occ"] = r.choice(["birthday", "special day"])
    if r.random() < 0.5:
        opening(s)
    s.say("Tomorrow was the {occ} of {N}'s {R}.", "{N} knew that tomorrow was {his} {R}'s {occ}.",
          "Soon it would be {N}'s {R}'s {occ}.")
    s.say("{N} wanted to give {rhim} something special.", "{N} wanted to make a gift.")
    s.say("So {he} {made}.", "{He} {made}.")
    s.say("{oops}")
    s.say("{N} was so sad that {he} started to cry.", "{N} felt very sad.")
    s.quote("{N}", r.choice(["Now I have no gift!", "It is all ruined!"]), he=c["he"])
    if r.random() < 0.5:
        s.say("{F} came over to help.", "{His} friend {F} heard {him} and came to help.")
        s.say("Together, they made a new one.", "They worked hard and made it again, even better.")
    else:
        s.say("{N} did not give up. {He} made a new one.", "{N} took a deep breath and started again.")
    s.say("The next day, {N} gave {his} {R} the gift.", "On the special day, {N} gave {his} {R} {gift}.")
    s.quote("{his} {R}", r.choice(["It is beautiful! Thank you!", "This is the best gift ever!",
                             "I love it, and I love you."]), he=c["rhe"])
    s.say("{N} smiled from ear to ear.", "{N} gave {his} {R} a big hug.")
    ending(s, "gift", p_lesson=0.2)
    return s.text()


def plot_pet(r):
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    pet = r.choice(PETS)
    set_animal(s, pet)
    c["pet"] = r.choice(PET_NAMES)
    c["ppro"] = r.choice(["he", "she"])
    c["pPro"] = cap(c["ppro"])
    c["phis"] = "his" if c["ppro"] == "he" else "her"
    c["phim"] = "him" if c["ppro"] == "he" else "her"
    c["pcol"] = r.choice(["brown", "white", "black", "gray", "orange", "golden", "spotted"])
    c["apcolA"] = article(c["pcol"] + " " + pet)
    c["part"] = r.choice(["soft ears", "a long tail", "big eyes", "tiny paws", "a pink nose", "a fluffy tail"])
    c["trick"] = r.choice(["sit", "roll over", "jump through a hoop", "find hidden treats", "say hello",
                           "catch a ball"] if pet in ("dog", "puppy", "parrot") else
                          ["sleep in the sun", "hide in a box", "chase a string", "climb on the sofa",
                           "nibble on lettuce"])
    s.say("{N} had {aA} named {pet}.", "{N}'s best friend was {aA} named {pet}.",
          "{N} lived in {town} with {his} {R} and {aA} named {pet}.")
    s.say("{pet} was {pcol} and had {part}.", "{pet} was {apcolA} with {part}.",
          "{pet} was small and {pcol}, with {part}.")
    s.say("Every morning, {pet} {Asound} to wake {N} up." if ANIMALS[pet][1] else "Every morning, {pet} sat by {N}'s bed.",
          "Every day, {pet} ate {Afood} from a little bowl.",
          "{pet} loved {Afood} more than anything.")
    s.say("{pet} could {trick}.", "{N} taught {pet} to {trick}.", "{pPro} liked to {trick}.")
    day = r.random()
    if day < 0.5:
        s.say("One day, {pet} was nowhere to be seen.", "One afternoon, {N} could not find {pet}.")
        c["spot"] = r.choice(IN_SPOTS)
        s.quote("{N}", "{pet}! Where are you?", he=c["he"])
        s.say("{N} looked everywhere.", "{N} searched the whole house.")
        s.say("At last, {he} found {pet} sleeping {spot}.", "{pet} was {spot}, fast asleep!")
        s.say("{N} laughed and gave {phim} a hug.", "{N} picked {phim} up and laughed.")
    else:
        s.say("On {N}'s birthday, {pet} got a new {toy} to play with.".replace("{toy}", r.choice(TOYS)),
              "{N} and {pet} liked to play in the garden together.")
        s.say("They played until it was time for bed.", "They ran and played all afternoon.")
    s.say("{N} loved {pet} very much.", "{pet} was the best {A} in {town}.",
          "At night, {pet} slept at the end of {N}'s bed.")
    return s.text()


def plot_place(r):
    c = Ctx()
    s = Story(r, c)
    p = r.choice(["farm", "forest", "beach", "park", "garden", "pond", "zoo", "meadow", "harbor", "village"])
    set_place(s, p)
    c["town"] = r.choice(TOWNS)
    c["aP"] = article(p)
    animals = {
        "farm": ["cow", "pig", "sheep", "hen", "horse", "goat", "duck", "goose", "lamb"],
        "forest": ["deer", "squirrel", "owl", "rabbit", "fox", "bear", "hedgehog", "bird"],
        "beach": ["crab", "seal", "bird"], "park": ["duck", "squirrel", "dog", "bird", "goose"],
        "garden": ["bee", "butterfly", "snail", "bird", "frog", "ant"], "pond": ["frog", "duck", "fish", "turtle", "goose"],
        "zoo": ["lion", "tiger", "elephant", "monkey", "seal", "parrot", "bear"],
        "meadow": ["bee", "butterfly", "rabbit", "sheep", "bird"], "harbor": ["seal", "bird", "fish", "crab"],
        "village": ["dog", "cat", "hen", "goose", "horse"],
    }[p]
    a1, a2, a3 = r.sample(animals, 3)
    set_animal(s, a1, "A")
    set_animal(s, a2, "B")
    set_animal(s, a3, "C")
    n = r.randint(2, 12)
    c["nA"] = count_phrase(n, a1)
    c["nB"] = count_phrase(r.randint(2, 6), a2)
    w = set_weather(s, ["sunny", "cloudy", "windy", "foggy"])
    c["dayp"] = r.choice(["morning", "afternoon", "evening"])
    s.say("There was {aP} near the town of {town}.", "Not far from {town}, there was a big {P}.",
          "The {P} was a busy place.", "The {P} was quiet in the {dayp}.")
    s.maybe(0.6, "{wdesc}")
    s.say("{atP}, you could see {Pthing1} and {Pthing2}.", "It had {Pthing1} and {Pthing2}.")
    s.say("{nA} lived there.", "There were {nA}.", "{nA} {Amove} around.")
    s.say("The {As} liked to eat {Afood}.", "The {As} {Asound}." if ANIMALS[a1][1] else "The {As} rested in the shade.")
    s.say("There were also {nB}.", "Not far away were {nB}.")
    s.maybe(0.7, "{aC} lived in {Chome}.", "Sometimes {aCadj} came to visit.", "Now and then, {aCadj} ran past.")
    s.say("In the evening, everything was quiet.", "At night, the {P} was dark and still.",
          "When the sun went down, the animals went to sleep.", "The {P} was a happy place for everyone.")
    s.maybe(0.3, "Children from {town} loved to visit the {P}.")
    return s.text()


def plot_dialogue(r):
    """Two friends talk about what they did."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    set_place(s, r.choice([p for p in PLACES if p not in ("school", "kitchen", "attic", "backyard")]))
    set_animal(s, r.choice(list(ANIMALS)))
    set_object(s, r.choice(TOYS))
    c["food"] = r.choice(COUNT_FOODS)
    c["foods"] = FOODS[c["food"]]
    c["n"] = r.choice(NUMBERS[2:8])
    c["town2"] = r.choice(TOWNS)
    set_animal(s, r.choice(list(ANIMALS)), "B")
    c["feel"] = r.choice(["happy", "sleepy", "calm", "excited", "tired", "hungry", "nervous", "surprised"])
    c["col"] = r.choice(COLORS)
    c["acol"] = article(c["col"])
    s.say("{N} met {F} on the way to school.", "After school, {N} sat with {F} on the steps.",
          "{N} and {F} were sitting under a tree.", "{N} and {F} were waiting for the bus.")
    topic = r.random()
    if topic < 0.4:
        s.quote("{F}", r.choice(["What did you do yesterday, {N}?", "Where did you go on Sunday?",
                                 "Did you have a good weekend?"]), he=c["fhe"])
        s.quote("{N}", r.choice(["I went {toP} with my {R}.", "My {R} took me {toP}."]), he=c["he"], reply=True)
        saw = ["I saw {aAadj}, and it {Asound}!" if ANIMALS[c["A"]][1] else "I saw {aAadj}!", "I saw {n} {As}!"]
        if r.random() < 0.5:
            s.quote("{F}", r.choice(["What did you see there?", "Was it fun?"]), he=c["fhe"])
            s.quote("{N}", r.choice(saw) if s.out[-1].count("see") else "Yes! " + r.choice(saw), he=c["he"], reply=True)
        else:
            s.quote("{F}", "What did you do there?", he=c["fhe"])
            s.quote("{N}", "We ate {foods} and played with my {O}.", he=c["he"], reply=True)
        s.quote("{F}", r.choice(["That sounds like fun!", "Wow! Can I come next time?", "I wish I was there."]),
                he=c["fhe"])
        s.quote("{N}", r.choice(["Yes, you can come with us next time.", "Of course! We can go together.",
                                 "Let's ask my {R}."]), he=c["he"], reply=True)
    elif topic < 0.6:
        s.quote("{F}", "What is your favorite animal, {N}?", he=c["fhe"])
        s.quote("{N}", r.choice(["My favorite animal is the {A}. What is yours?", "I like the {A} best. And you?"]),
                he=c["he"], reply=True)
        s.quote("{F}", r.choice(["My favorite animal is the {B}.", "I like the {B}, because it {Bmove} so well."]),
                he=c["fhe"], reply=True)
        s.quote("{N}", r.choice(["Your favorite animal is nice too!", "Let's draw {aA} and {aB}!"]), he=c["he"])
    elif topic < 0.8:
        s.quote("{F}", "Where do you live, {N}?", he=c["fhe"])
        s.quote("{N}", r.choice(["I live in {town}, near the {P}. Where do you live?",
                                 "I live in {town}. My house has {acol} door."]), he=c["he"], reply=True)
        s.quote("{F}", r.choice(["I live in {town2}. Can you come to my house?", "I live in {town2}, near the school."]),
                he=c["fhe"], reply=True)
        s.quote("{N}", r.choice(["Yes! I will ask my {R}.", "Your house sounds nice!"]), he=c["he"])
    else:
        s.quote("{F}", "How do you feel today, {N}?", he=c["fhe"])
        s.quote("{N}", r.choice(["I feel {feel}. How do you feel?", "I feel {feel} today. And you?"]),
                he=c["he"], reply=True)
        k = r.randint(0, 2)
        s.quote("{F}", ["I feel happy, because it is my birthday!", "I feel good. Can I play with your {O}?",
                        "I feel a little sleepy."][k], he=c["fhe"], reply=True)
        s.quote("{N}", ["Happy birthday, {F}! Your smile makes me happy too.", "Yes, you can play with my {O}.",
                        "Me too. Let's sit in the sun and rest."][k], he=c["he"])
    s.say("{F} smiled.", "The two friends laughed.", "Then the bell rang, and they ran inside.",
          "They made a plan to go {toP} together.")
    return s.text()


TEACHERS = [("Miss Lee", "f"), ("Mr. Brown", "m"), ("Mrs. Green", "f"), ("Mr. Park", "m"),
            ("Miss Rose", "f"), ("Mr. Gray", "m"), ("Miss Quinn", "f")]


def plot_school(r):
    """A number lesson: digits, +, =, > and < in a story."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    t, tg = r.choice(TEACHERS)
    c["T"] = t
    c.update(pronouns("t", tg))
    a, b = r.randint(1, 9), r.randint(1, 9)
    c["a"], c["b"], c["sum"], c["sumw"] = a, b, a + b, NUMBERS[a + b]
    x, y = r.sample(range(1, 13), 2)
    if x < y:
        x, y = y, x
    c["x"], c["y"], c["xw"], c["yw"] = x, y, NUMBERS[x], NUMBERS[y]
    set_object(s, r.choice(["crayon", "marble", "shell", "stone", "coin", "acorn"]))
    c["time"] = r.choice(PLAIN_OPENERS[:4] + ["On Monday", "On Tuesday", "On Friday"])
    n, k = r.randint(6, 12), r.randint(1, 5)
    c["n"], c["k"], c["left"] = n, k, n - k
    s.say("{time}, {N} was at school.", "At school, {T} was teaching numbers.",
          "{N} liked number time at school.", "{time}, the class had a number lesson with {T}.")
    s.say("{T} wrote {a} + {b} = ? on the board.", "On the board, {T} wrote {a} + {b} = ?.")
    s.say("{N} counted on {his} fingers.", "{N} thought hard.", "Everyone was quiet.")
    s.quote("{N}", r.choice(["It is {sumw}!", "Is it {sumw}?", "I know! It is {sum}."]), he=c["he"])
    s.quote("{T}", r.choice(["Yes! {a} + {b} = {sum}.", "That is right. {a} + {b} = {sum}.",
                             "Good job, {N}!"]), he=c["the"])
    if r.random() < 0.7:
        s.say("Then {T} wrote {x} > {y}.", "Next, {T} wrote {x} > {y} on the board.")
        s.quote("{F}", r.choice(["{xw} is more than {yw}.", "{x} is bigger than {y}."]), he=c["fhe"])
        s.say("{T} nodded. Then {the} wrote {y} < {x}.", "After that, {T} wrote {y} < {x}.")
        s.say("That meant {yw} is less than {xw}.", "{N} said that {yw} is less than {xw}.")
    if r.random() < 0.6:
        s.say("There were {n} {Os} in a box.", "{T} put {n} {Os} on the table.")
        s.say("{N} took {k}, so {left} were left.", "{F} took {k}. Then there were {left}.")
    s.say("{T} drew a star * next to {N}'s name.", "{N} got a gold star * on {his} paper.",
          "At the end of the lesson, everyone got a star *.")
    s.say("{N} felt proud.", "{N} liked numbers a lot.", "After school, {N} told {his} {R} about the lesson.")
    return s.text()


def plot_list(r):
    """A shopping trip with a written list: digits, colons and semicolons."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    foods = r.sample(COUNT_FOODS, 3)
    counts = [r.randint(1, 6) for _ in foods]
    c["list"] = "; ".join("%d %s" % (n, f if n == 1 else FOODS[f]) for n, f in zip(counts, foods))
    prices = [r.randint(2, 5) for _ in foods]
    c["f1"], c["f1s"], c["p1"] = foods[0], FOODS[foods[0]], prices[0]
    c["f2"], c["f2s"], c["p2"] = foods[1], FOODS[foods[1]], prices[1]
    c["f3s"], c["p3"] = FOODS[foods[2]], prices[2]
    c["total"] = prices[0] + prices[1] + prices[2]
    c["sum"] = " + ".join(str(p) for p in prices)
    c["coins"] = c["total"] + r.randint(0, 4)
    c["time"] = r.choice(PLAIN_OPENERS[:4] + ["On Saturday", "On Sunday"])
    s.say("{time}, {N}'s {R} wrote a list for the market: {list}.",
          "{N} and {his} {R} made a list: {list}.",
          "Before going to the market, {N} wrote a list: {list}.")
    s.say("{N} held the list, and they walked to the market.", "{N} put the list in {his} pocket.")
    s.say("At the market, {f1s} cost {p1} coins.", "The price of the {f1s} was {p1} coins.",
          "A kind man sold {f1s} for {p1} coins.")
    s.say("The {f2s} cost {p2} coins.", "The price of the {f2s} was {p2} coins.")
    s.say("The {f3s} cost {p3} coins.", "And the {f3s} were {p3} coins.")
    s.say("{N} added it up: {sum} = {total}.", "{N} counted: {sum} = {total} coins in all.")
    s.say("They had {coins} coins, so they had enough.", "{His} {R} paid {total} coins.")
    s.say("At home, {N} checked the list. Everything was there.",
          "On the way home, {N} carried the bag.", "{N} was proud that {he} could count so well.")
    return s.text()


ROBOT_NAMES = ["Bolt", "Beep", "Gizmo", "Zip", "Sparky", "Chip"]
ROBOT_CMDS = [("hop", "hopped"), ("jump", "jumped"), ("spin", "spun around"), ("clap", "clapped"),
              ("beep", "beeped"), ("dance", "danced"), ("wave", "waved"), ("sing", "sang")]


def times(n):
    return {1: "once", 2: "twice"}.get(n, "%d times" % n)


def plot_robot(r):
    """A toy robot that reads cards: curly brackets, colons, = and arrows."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    c["bot"] = r.choice(ROBOT_NAMES)
    s.say("{N} had a toy robot named {bot}.", "{N} built a little robot named {bot} from a box and some buttons.",
          "For {his} birthday, {N} got a toy robot. {He} named it {bot}.")
    s.say("{bot} could read cards with curly brackets.", "{bot} understood cards with words inside curly brackets.",
          "{bot} did what the cards said, if the words were inside curly brackets.")
    cmds = r.sample(ROBOT_CMDS, 3)
    for i, (cmd, past) in enumerate(cmds[:2]):
        n = r.randint(1, 5)
        c["card"] = "{%s: %d}" % (cmd, n)
        c["did"] = past + " " + times(n)
        if i == 0:
            s.say("{N} held up a card that said {card}.", "First, {N} showed {bot} the card {card}.")
        else:
            s.say("The next card said {card}.", "Then {N} wrote {card} on a new card.")
        s.say("{bot} {did}.", "So {bot} {did}.")
    ev = r.random()
    if ev < 0.35:
        cmd, past = cmds[2]
        wrong = cmd[1] + cmd[0] + cmd[2:]
        c["bad"] = "{%s: 2}" % wrong
        c["good"] = "{%s: 2}" % cmd
        c["did"] = past + " twice"
        s.say("Then {F} made a card that said {bad}.")
        s.quote(c["bot"], "Beep! I do not know that word.")
        s.say("{N} laughed and fixed the card. Now it said {good}.")
        s.say("{bot} {did}.")
    elif ev < 0.7:
        c["col"] = r.choice(["red", "blue", "green", "yellow", "purple"])
        c["card"] = "{eyes: %s, light: on}" % c["col"]
        s.say("Then {F} made a card with two words: {card}.", "{F} wanted a turn. {fHe} wrote {card}.")
        s.say("{bot}'s eyes turned {col}, and a little light came on.")
    else:
        c["arrows"] = " ".join(r.choice([">", "<"]) for _ in range(3))
        c["speed"] = r.randint(1, 3)
        s.say("{N} also taught {bot} arrows. The arrow > meant right, and < meant left.")
        s.say("Then {N} wrote {arrows} on a card, and {bot} turned that way three times.")
        s.say("{F} wrote speed = {speed} on the back, and {bot} rolled across the floor.")
    s.say("Everyone laughed.", "{N} and {F} played with {bot} all afternoon.",
          "{bot} blinked its lights. It looked happy.")
    s.maybe(0.5, "That night, {bot} sat on the shelf next to {N}'s bed.", "{N} loved {his} little robot.")
    return s.text()


SIB_NAMES = ["Pip", "Bo", "Dot"]


def plot_class(r):
    """Facts about a class: kids, ages, grades, towns, pets; oldest and youngest."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    t, tg = r.choice(TEACHERS)
    c["T"] = t
    c.update(pronouns("t", tg))
    names = []
    while len(names) < 3:
        n, g = child(r, exclude=[c["N"]] + [x for x, _ in names])
        names.append((n, g))
    ages = sorted(r.sample(range(5, 11), 3), reverse=True)
    (k1, g1), (k2, g2), (k3, g3) = names
    c["k1"], c["k2"], c["k3"] = k1, k2, k3
    c["a1"], c["a2"], c["a3"] = ages[0], ages[2], ages[1]
    c["k1He"] = "She" if g1 == "f" else "He"
    c["k2He"] = "She" if g2 == "f" else "He"
    c["n"] = r.randint(8, 20)
    g = r.randint(1, 5)
    c["g"] = str(g) if r.random() < 0.5 else NUMBERS[g]
    p1, p2 = r.sample(PETS, 2)
    c["pet1"], c["pet2"] = p1, p2
    c["pn1"], c["pn2"] = r.sample(PET_NAMES, 2)
    pa1, pa2 = r.sample(range(1, 13), 2)
    c["pa1"], c["pa2"] = pa1, pa2
    c["older"] = c["pn1"] if pa1 > pa2 else c["pn2"]
    c["younger"] = c["pn2"] if pa1 > pa2 else c["pn1"]
    c["pcol"] = r.choice(["brown", "white", "black", "gray", "orange", "spotted"])
    s.say("{T} had {n} kids in {this} class.", "There were {n} kids in {N}'s class at school.",
          "{N} went to school in {town}. There were {n} kids in {his} class.")
    s.say("Most of them lived in {town}.", "All of the kids lived in {town} or near it.",
          "The class was in grade {g}, at the school in {town}.")
    s.maybe(0.5, "On the first day, each kid said their name and age.",
            "The teacher asked the kids to line up in order of age, from youngest to oldest.",
            "{T} sorted the kids by age, from oldest to youngest.")
    s.say("The oldest kid was {k1}, who was {a1}.", "{k1} was the oldest. {k1He} was {a1} years old.",
          "At the age of {a1}, {k1} was the oldest.")
    s.say("The youngest was {k2}. {k2He} was only {a2}.", "{k2} was the youngest, at {a2} years old.")
    s.say("{k3} was {a3}, so {k3} was older than {k2} but younger than {k1}.",
          "{k3} was younger than {k1} and older than {k2}.")
    s.say("One day, {T} asked the kids about their pets.", "One morning, the class talked about pets.")
    s.quote("{T}", r.choice(["Who has a pet? What are their names?", "Tell me the names of your pets."]),
            he=c["the"])
    s.quote("{k1}", "I have {apet1} named {pn1}. {pn1} is {pa1}.".replace("{apet1}", article(p1)), he=None)
    s.quote("{k2}", "My {pet2} is called {pn2}, and {pn2} is {pcol}.", he=None)
    s.quote("{T}", r.choice(["Which pet is older?", "Whose pet is older?"]), he=c["the"])
    s.quote("{N}", r.choice(["{pn1} is {pa1} and {pn2} is {pa2}, so {older} is older!",
                             "{older} is older than {younger}!"]), he=None)
    s.say("{T} wrote the names of the pets on the board.", "{T} smiled and wrote the names and ages on the board.")
    s.say("Everyone liked the lesson about pets.", "The kids talked about their pets all day.")
    return s.text()


TOY_ROOMS = ["bedroom", "playroom", "attic", "hall", "kitchen", "garden"]


def plot_shop(r):
    """A toy shop: prices, cheapest and most expensive, where the toy goes at home."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    toys = r.sample(TOYS, 4)
    prices = sorted(r.sample(range(2, 20), 3))
    for i, (t, p) in enumerate(zip(toys, prices + [1])):
        c["t%d" % i] = t
        c["t%ds" % i] = OBJECTS[t][0] if t in OBJECTS else t + "s"
        c["p%d" % i] = p
        c["col%d" % i] = r.choice(COLORS)
    c["m"] = r.randint(prices[0], prices[2] + 2)
    c["time"] = r.choice(PLAIN_OPENERS[:4] + ["On Saturday", "On Sunday"])
    c["room"] = r.choice(TOY_ROOMS)
    s.say("{time}, {N} and {his} {R} went to the toy shop in {town}.",
          "There was a toy shop in {town}, and {N} loved to go there.")
    s.say("There were {t0s}, {t1s} and {t2s} on the shelves.", "The shop had {t0s}, {t1s}, {t2s} and much more.")
    s.say("{acol0t0} cost {p0} coins.".replace("{acol0t0}", cap(article(c["col0"] + " " + c["t0"]))),
          "The price of the {col0} {t0} was {p0} coins.")
    s.say("The {t1} cost {p1} coins.", "The price of the {t1} was {p1} coins.")
    s.say("The {t2} was the most expensive toy. It cost {p2} coins.",
          "The most expensive toy was the {t2}, for {p2} coins.")
    s.say("The cheapest toy was a little {t3}, for just 1 coin.", "A tiny {t3} was the cheapest. It cost only 1 coin.")
    s.say("{N} had {m} coins in {his} pocket.", "{N} counted {his} coins. {He} had {m}.")
    if c["m"] >= prices[2]:
        s.say("That was enough for the {t2}!", "{He} had enough coins for the most expensive toy.")
        c["got"] = c["t2"]
    elif c["m"] >= prices[1]:
        s.say("{He} did not have enough for the {t2}, so {he} chose the {t1}.")
        c["got"] = c["t1"]
    else:
        s.say("{He} did not have enough for the {t1} or the {t2}, so {he} chose the {t0}.")
        c["got"] = c["t0"]
    s.quote("{N}", r.choice(["I will take the {got}, please.", "Can I have the {got}, please?"]), he=c["he"])
    s.say("At home, {N} put the {got} in the {room}.", "{N} kept the new {got} in the {room}.")
    s.quote("{his} {R}", r.choice(["Your new {got} is very nice.", "You chose well. Take good care of your {got}."]),
            he=c["rhe"])
    s.maybe(0.5, "{N} played with the {got} until bedtime.", "{N} smiled. It was {his} favorite toy now.")
    return s.text()


def plot_quiz(r):
    """A reading lesson: the teacher reads a short story and asks questions about it."""
    c = base_ctx(r)
    s = Story(r, c)
    prepare_hero(s)
    t, tg = r.choice(TEACHERS)
    c["T"] = t
    c.update(pronouns("t", tg))
    n1, _ = child(r, exclude=(c["N"], c["F"]))
    n2, _ = child(r, exclude=(c["N"], c["F"], n1))
    c["n1"], c["n2"] = n1, n2
    set_place(s, r.choice(["park", "beach", "forest", "river", "farm", "garden", "lake", "meadow"]))
    set_object(s, r.choice(["kite", "ball", "shell", "hat", "key", "book", "cup", "coin", "feather", "box"]))
    set_animal(s, r.choice(["fox", "owl", "frog", "duck", "rabbit", "deer", "squirrel", "goat", "horse"]))
    c["feel"] = r.choice(["happy", "surprised", "scared", "proud", "calm", "sleepy"])
    c["time"] = r.choice(PLAIN_OPENERS[:4] + ["On Monday", "On Friday"])
    s.say("{time}, {T} read a short story to the class.", "At school, {T} had a new story for the class.")
    s.say("In the story, {n1} and {n2} went {toP}. {n1} found {aOadj}, and {n2} saw {aA}.",
          "The story was about {n1} and {n2}. They went {toP}, where {n1} found {aOadj} and {n2} saw {aA}.")
    s.say("{n2} felt {feel}.", "When {n2} saw the {A}, {n2} felt {feel}.")
    s.say("Then {T} asked a question.", "After the story, {T} had some questions.",
          "Question time! {T} looked at the class.")
    kind = r.random()
    if kind < 0.35:
        s.quote("{T}", "Who found the {O}?", he=c["the"])
        c["ans"], c["Ans"] = n1, "{n1} found it".format(n1=n1)
    elif kind < 0.6:
        s.quote("{T}", "What color was the {O}?", he=c["the"])
        c["ans"], c["Ans"] = c["Oadj"], "It was " + c["Oadj"]
    elif kind < 0.8:
        s.quote("{T}", "What animal did {n2} see?", he=c["the"])
        c["ans"] = c["aA"]
        c["Ans"] = n2 + " saw " + c["aA"]
    else:
        s.quote("{T}", "How did {n2} feel?", he=c["the"])
        c["ans"] = None
        c["Ans"] = n2 + " felt " + c["feel"]
    s.say("{N} put up {his} hand.", "{N} knew the answer.", "{F} and {N} both put up their hands.")
    s.quote("{N}", r.choice(["I know! {Ans}.", "{Ans}!"] + (["The answer is {ans}!"] if c["ans"] else [])),
            he=c["he"])
    s.quote("{T}", r.choice(["That is the right answer!", "Yes, well done!", "Very good, {N}."]), he=c["the"])
    s.say("{N} felt proud.", "Everyone liked the story.", "Then it was time to go outside and play.",
          "The teacher smiled and showed the class another story.")
    return s.text()


PLOTS = [
    (plot_lost, 14), (plot_activity, 22), (plot_help_animal, 12), (plot_share, 9),
    (plot_fear, 7), (plot_trip, 10), (plot_fable, 8), (plot_picnic, 5), (plot_gift, 5),
    (plot_pet, 8), (plot_place, 6), (plot_dialogue, 6), (plot_school, 3), (plot_list, 3),
    (plot_robot, 3), (plot_class, 3), (plot_shop, 3), (plot_quiz, 3),
]


def story(rng):
    fns = [p for p, _ in PLOTS]
    weights = [w for _, w in PLOTS]
    fn = rng.choices(fns, weights)[0]
    return fn(rng)


def generate(seed, target_bytes, exclude=None):
    rng = random.Random(seed)
    out = []
    total = 0
    while total < target_bytes:
        t = story(rng)
        if exclude is not None and t in exclude:
            continue
        out.append(t)
        total += len(t.encode("utf-8")) + 1
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(root, "www", "assets", "builtin", "corpus"))
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--valid-seed", type=int, default=2)
    ap.add_argument("--train-bytes", type=int, default=8_000_000)
    ap.add_argument("--valid-bytes", type=int, default=200_000)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    train = generate(args.train_seed, args.train_bytes)
    seen = dict.fromkeys(train)
    valid = generate(args.valid_seed, args.valid_bytes, exclude=seen)
    for name, stories in (("train.txt", train), ("valid.txt", valid)):
        path = os.path.join(args.out, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(stories))
            f.write("\n")
        words = sum(len(t.split()) for t in stories)
        print("%s: %d stories, %d words, %d bytes" % (path, len(stories), words, os.path.getsize(path)))


if __name__ == "__main__":
    main()
