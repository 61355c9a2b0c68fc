"""Shared word lists for the tinytune built-in data generators.

Used by make_corpus.py (the pretraining stories) and make_tasks.py (the
finetuning tasks), so that the task prompts use words the base model has
already seen during pretraining.

Everything here is a plain list or dict (never a set), so iteration order,
and therefore the generated data, is the same on every run and every Python
build.
"""

GIRLS = [
    "Mia", "Lily", "Emma", "Ava", "Zoe", "Ella", "Lucy", "Anna", "Rosa", "Nina",
    "Ivy", "Ruby", "Maya", "Lena", "Sara", "Amy", "Kim", "Eva", "Nora", "Tara",
    "Jade", "Luna", "Hana", "Ada", "Bella", "Daisy", "Grace", "Hope", "June", "Kate",
]

BOYS = [
    "Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Finn", "Noah", "Eli", "Owen",
    "Luke", "Jake", "Dan", "Tim", "Oscar", "Hugo", "Ivan", "Omar", "Ravi", "Kai",
    "Theo", "Adam", "Milo", "Jonah", "Pablo", "Ned", "Rob", "Otto", "Zack", "Carl",
]

# Names given to animal characters and pets.
PET_NAMES = [
    "Pip", "Bo", "Dot", "Fluff", "Spot", "Sunny", "Rusty", "Coco", "Bingo",
    "Patch", "Nugget", "Ziggy", "Pepper", "Nutmeg", "Biscuit", "Button", "Toffee",
    "Shadow", "Pebble", "Muffin",
]

TOWNS = [
    "Hilltop", "Oakville", "Bayside", "Pinewood", "Brookfield", "Maple Bend",
    "Riverton", "Sunnydale", "Stonebridge", "Greenwood",
]

# Family members, as the narrator names them ("her mom") and as a child
# addresses them in dialogue ("Mom").
RELATIVES = [
    ("mom", "Mom", "f"), ("dad", "Dad", "m"), ("grandma", "Grandma", "f"),
    ("grandpa", "Grandpa", "m"), ("aunt", "Aunt May", "f"), ("uncle", "Uncle Joe", "m"),
    ("big sister", "Sis", "f"), ("big brother", "Bro", "m"),
]

# name: (plural, sound (past tense) or None, movement (past tense), home, food, kind)
ANIMALS = {
    "dog": ("dogs", "barked", "ran", "a warm kennel", "bones", "pet"),
    "cat": ("cats", "meowed", "crept", "a soft basket", "fish", "pet"),
    "puppy": ("puppies", "yipped", "ran", "a little basket", "bones", "pet"),
    "kitten": ("kittens", "mewed", "crept", "a little basket", "milk", "pet"),
    "bird": ("birds", "sang", "flew", "a nest in a tall tree", "seeds", "wild"),
    "rabbit": ("rabbits", None, "hopped", "a burrow under a hill", "carrots", "wild"),
    "fox": ("foxes", "yelped", "ran", "a den in the forest", "berries", "wild"),
    "owl": ("owls", "hooted", "flew", "a hole in an old tree", "mice", "wild"),
    "frog": ("frogs", "croaked", "hopped", "a green pond", "flies", "wild"),
    "duck": ("ducks", "quacked", "waddled", "a quiet pond", "bread", "farm"),
    "fish": ("fish", None, "swam", "a clear river", "tiny bugs", "water"),
    "horse": ("horses", "neighed", "galloped", "a big stable", "hay", "farm"),
    "cow": ("cows", "mooed", "walked", "a red barn", "grass", "farm"),
    "pig": ("pigs", "oinked", "trotted", "a muddy pen", "apples", "farm"),
    "sheep": ("sheep", "baaed", "walked", "a green field", "grass", "farm"),
    "goat": ("goats", "bleated", "climbed", "a rocky field", "leaves", "farm"),
    "hen": ("hens", "clucked", "ran", "a small henhouse", "corn", "farm"),
    "mouse": ("mice", "squeaked", "scurried", "a hole in the wall", "cheese", "wild"),
    "bear": ("bears", "growled", "walked", "a dark cave", "honey", "wild"),
    "deer": ("deer", None, "leaped", "the deep forest", "leaves", "wild"),
    "squirrel": ("squirrels", "chattered", "climbed", "a tall oak tree", "nuts", "wild"),
    "turtle": ("turtles", None, "crawled", "a shady pond", "leaves", "water"),
    "bee": ("bees", "buzzed", "flew", "a busy hive", "nectar", "bug"),
    "butterfly": ("butterflies", None, "fluttered", "a sunny garden", "nectar", "bug"),
    "snail": ("snails", None, "crawled", "a damp corner of the garden", "leaves", "bug"),
    "ant": ("ants", None, "marched", "a big anthill", "crumbs", "bug"),
    "lion": ("lions", "roared", "walked", "a rocky den", "meat", "zoo"),
    "tiger": ("tigers", "roared", "walked", "the jungle", "meat", "zoo"),
    "elephant": ("elephants", "trumpeted", "stomped", "the jungle", "peanuts", "zoo"),
    "monkey": ("monkeys", "chattered", "swung", "a tall tree in the jungle", "bananas", "zoo"),
    "goose": ("geese", "honked", "waddled", "a quiet pond", "grass", "farm"),
    "wolf": ("wolves", "howled", "ran", "a den in the hills", "meat", "wild"),
    "seal": ("seals", "barked", "swam", "the rocks by the sea", "fish", "water"),
    "crab": ("crabs", None, "scuttled", "a rock pool", "seaweed", "water"),
    "lamb": ("lambs", "baaed", "skipped", "a green field", "grass", "farm"),
    "pony": ("ponies", "neighed", "trotted", "a small stable", "apples", "farm"),
    "hedgehog": ("hedgehogs", "sniffed", "trotted", "a pile of leaves", "beetles", "wild"),
    "parrot": ("parrots", "squawked", "flew", "a big cage", "seeds", "pet"),
}

PETS = ["dog", "cat", "puppy", "kitten", "rabbit", "parrot", "hedgehog", "turtle", "mouse", "pony"]
SMALL_CRITTERS = ["mouse", "rabbit", "squirrel", "hedgehog", "duck", "frog", "bird", "fox", "owl", "turtle", "snail", "ant", "bee"]

# name: (phrase used after "went", phrase for "being there", outdoor?, things seen there)
PLACES = {
    "forest": ("to the forest", "in the forest", True, ["tall trees", "a fallen log", "a narrow path", "big brown mushrooms"]),
    "park": ("to the park", "at the park", True, ["the swings", "a long slide", "a big oak tree", "a little fountain"]),
    "beach": ("to the beach", "at the beach", True, ["the waves", "sand dunes", "pretty shells", "a red boat"]),
    "river": ("to the river", "by the river", True, ["a small waterfall", "smooth stones", "a small bridge", "tall reeds"]),
    "lake": ("to the lake", "by the lake", True, ["a little island", "a wooden dock", "tall reeds", "a little boat"]),
    "farm": ("to the farm", "on the farm", True, ["a red barn", "a green tractor", "fields of corn", "a wooden fence"]),
    "garden": ("to the garden", "in the garden", True, ["bright flowers", "rows of carrots", "a little pond", "an apple tree"]),
    "hill": ("up the hill", "on the hill", True, ["soft grass", "a big rock", "a view of the town", "yellow flowers"]),
    "pond": ("to the pond", "by the pond", True, ["lily pads", "tall reeds", "a big willow tree", "a wooden bench"]),
    "meadow": ("to the meadow", "in the meadow", True, ["tall grass", "wild flowers", "a little stream", "a lonely tree"]),
    "school": ("to school", "at school", False, ["tables and chairs", "a big board", "colorful books", "a box of crayons"]),
    "market": ("to the market", "at the market", True, ["piles of fruit", "fresh loaves", "baskets of eggs", "sweet cakes"]),
    "library": ("to the library", "at the library", False, ["rows of books", "soft chairs", "a quiet corner", "a big map"]),
    "zoo": ("to the zoo", "at the zoo", True, ["big cages", "a pond with seals", "a tall fence", "a little train"]),
    "kitchen": ("to the kitchen", "in the kitchen", False, ["a warm oven", "a big table", "jars of jam", "a bowl of fruit"]),
    "attic": ("up to the attic", "in the attic", False, ["dusty boxes", "an old chair", "a round window", "a big trunk"]),
    "orchard": ("to the orchard", "in the orchard", True, ["rows of trees", "red apples", "a tall ladder", "baskets of pears"]),
    "island": ("to the island", "on the island", True, ["a sandy beach", "tall palm trees", "a small hut", "a tall rock"]),
    "mountain": ("up the mountain", "on the mountain", True, ["big rocks", "tall pine trees", "white snow", "a long path"]),
    "cave": ("into the cave", "in the cave", False, ["dark walls", "drops of water", "shiny stones", "a narrow tunnel"]),
    "village": ("to the village", "in the village", True, ["little houses", "a busy shop", "a stone well", "a small church"]),
    "bakery": ("to the bakery", "at the bakery", False, ["fresh loaves", "warm buns", "a big oven", "sweet cakes"]),
    "field": ("to the field", "in the field", True, ["tall grass", "wild flowers", "a wooden fence", "a big tree"]),
    "barn": ("to the barn", "in the barn", False, ["piles of hay", "a tall ladder", "old tools", "a sleepy cat"]),
    "playground": ("to the playground", "at the playground", True, ["the swings", "a slide", "a sandbox", "a seesaw"]),
    "harbor": ("to the harbor", "at the harbor", True, ["big ships", "small boats", "fishing nets", "the blue sea"]),
    "backyard": ("to the backyard", "in the backyard", True, ["a green lawn", "a swing", "a small shed", "a vegetable patch"]),
    "bridge": ("to the bridge", "on the bridge", True, ["the river below", "old stones", "a lamp post", "boats passing by"]),
}

COLORS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown",
          "black", "white", "gray", "golden", "silver"]

SIZES = ["big", "small", "little", "tiny", "huge"]

# Toys and other things a child can carry, lose, find or share.
# name: (plural, light? (can blow away))
OBJECTS = {
    "ball": ("balls", True), "kite": ("kites", True), "doll": ("dolls", False),
    "teddy bear": ("teddy bears", False), "toy car": ("toy cars", False),
    "drum": ("drums", False), "book": ("books", False), "hat": ("hats", True),
    "scarf": ("scarves", True), "umbrella": ("umbrellas", True), "box": ("boxes", False),
    "basket": ("baskets", False), "key": ("keys", False), "shell": ("shells", False),
    "stone": ("stones", False), "feather": ("feathers", True), "map": ("maps", True),
    "lamp": ("lamps", False), "bucket": ("buckets", False), "cup": ("cups", False),
    "blanket": ("blankets", True), "bike": ("bikes", False), "toy boat": ("toy boats", False),
    "jar": ("jars", False), "bell": ("bells", False), "ring": ("rings", False),
    "coin": ("coins", False), "crayon": ("crayons", False), "balloon": ("balloons", True),
    "puzzle": ("puzzles", False), "flute": ("flutes", False), "robot": ("robots", False),
    "toy train": ("toy trains", False), "rope": ("ropes", False), "shovel": ("shovels", False),
    "wagon": ("wagons", False), "whistle": ("whistles", False), "mitten": ("mittens", True),
    "ribbon": ("ribbons", True), "picture": ("pictures", True), "letter": ("letters", True),
    "clock": ("clocks", False), "marble": ("marbles", False), "spoon": ("spoons", False),
    "acorn": ("acorns", False), "egg": ("eggs", False), "envelope": ("envelopes", True),
    "sock": ("socks", True), "boot": ("boots", False), "backpack": ("backpacks", False),
}
TOYS = ["ball", "kite", "doll", "teddy bear", "toy car", "drum", "robot", "toy train",
        "puzzle", "toy boat", "balloon", "marble", "whistle", "flute", "wagon"]

# Food: (singular or mass noun, plural or None for mass nouns)
FOODS = {
    "apple": "apples", "pear": "pears", "banana": "bananas", "orange": "oranges",
    "cake": "cakes", "cookie": "cookies", "pie": "pies", "sandwich": "sandwiches",
    "muffin": "muffins", "carrot": "carrots", "plum": "plums", "peach": "peaches",
    "bun": "buns", "cherry": "cherries", "egg": "eggs",
    "bread": None, "cheese": None, "honey": None, "milk": None, "jam": None,
    "soup": None, "rice": None, "corn": None, "lemonade": None,
}
FOOD_NAMES = list(FOODS)
COUNT_FOODS = [f for f in FOOD_NAMES if FOODS[f]]

FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "calm", "thankful", "cheerful"]
FEELINGS_BAD = ["sad", "scared", "worried", "upset", "lonely", "grumpy", "nervous", "angry"]

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
           "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
           "seventeen", "eighteen", "nineteen", "twenty"]


def article(phrase):
    """'a' or 'an' for a phrase (the lists above avoid words like 'unicorn')."""
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def plural(noun):
    if noun in ANIMALS:
        return ANIMALS[noun][0]
    if noun in OBJECTS:
        return OBJECTS[noun][0]
    if noun in FOODS and FOODS[noun]:
        return FOODS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def count_phrase(n, noun):
    """'one duck', 'three ducks', 'two sheep'."""
    return NUMBERS[n] + " " + (noun if n == 1 else plural(noun))


def cap(s):
    return s[:1].upper() + s[1:]
