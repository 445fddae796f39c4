"""The vocabulary of the built-in stories: names, animals, homes, things, places and small words.

Plain data, no logic: the engine (`llm.stories.engine`) draws the cast and the setting of each
story from these lists, and a few plots (`llm.stories.plots`) draw from them too. Keeping the
vocabulary small (a few hundred words in all) is what makes the corpus easy to learn for a tiny
model. Articles are added at run time by `llm.stories.writer.with_article`, so no entry may start
with a silent or a "yoo" vowel ("hour", "unicorn").
"""

from dataclasses import dataclass


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GIRL_NAMES = _words(
    "Lily Mia Anna Sue Emma Zoe Lucy Amy Kate Rose Ella Sara Jane Ruby Nora Grace "
    "Molly Lila Hannah Ivy Clara Maya Julia Alice Betty"
)
BOY_NAMES = _words(
    "Tim Ben Sam Max Tom Leo Jack Finn Jake Alex Noah Luke Ryan Oscar Henry Eli Owen "
    "Danny Joe Peter Adam Billy Charlie Felix Harry"
)
PET_NAMES = _words(
    "Spot Buddy Fluffy Coco Pip Sunny Bubbles Rusty Patch Whiskers Snowy Ginger Biscuit Pepper "
    "Rex Lucky Peanut Toby"
)
# kind -> (how it moves, where it lives)
ANIMALS = {
    "cat": ("ran", "in a warm house with a big garden"),
    "dog": ("ran", "in a little house with a red door"),
    "puppy": ("ran", "in a small house at the end of the street"),
    "kitten": ("ran", "in a cozy house near the park"),
    "bunny": ("hopped", "in a cozy hole under an old tree"),
    "frog": ("hopped", "in a green pond full of lily pads"),
    "duck": ("waddled", "by a quiet pond"),
    "bear": ("walked", "in a big cave in the woods"),
    "fox": ("ran", "in a den at the edge of the woods"),
    "mouse": ("ran", "in a tiny hole in the wall"),
    "squirrel": ("ran", "in a tall oak tree"),
    "pig": ("trotted", "on a busy farm"),
    "lamb": ("skipped", "on a green farm"),
    "bird": ("flew", "in a nest high in a tree"),
    "hedgehog": ("walked", "in a pile of leaves under a hedge"),
    "turtle": ("walked", "in a quiet pond by the woods"),
    "owl": ("flew", "in a hollow in an old tree"),
    "goat": ("trotted", "on a rocky hill"),
    "chick": ("walked", "in a little coop on a farm"),
    "horse": ("trotted", "in a big red barn"),
    "elephant": ("walked", "near a wide river"),
    "penguin": ("waddled", "on the cold ice by the sea"),
}
PARENTS = (("Mom", "mom", True), ("Dad", "dad", False), ("Grandma", "grandma", True),
           ("Grandpa", "grandpa", False))  # fmt: skip
CHILD_HOMES = (
    "in a little house with a red door",
    "in a small town by the sea",
    "in a yellow house near the woods",
    "in a busy town with many trees",
    "in a cozy house on a quiet street",
    "on a farm with many animals",
)
TRAITS = _words(
    "kind happy brave curious shy silly clever gentle friendly cheerful busy playful "
    "helpful sweet polite quiet lively funny careful smart caring cute"
)
COLORS = _words("red blue yellow green pink purple orange white shiny bright")
TIMES = _words("morning day afternoon evening")
WEATHERS = _words("sunny warm bright lovely nice")
GOOD_FEELINGS = _words("happy glad joyful")
SAD_FEELINGS = _words("sad upset worried unhappy")
SNACKS = _words("cookies apples sandwiches grapes strawberries crackers cupcakes muffins cherries")
GAMES = (
    "tag",
    "hide and seek",
    "catch",
    "jump rope",
    "a game of chase",
    "leapfrog",
    "hopscotch",
    "pretend pirates",
)
# something that makes the hero look away or wander off
DISTRACTIONS = (
    "a pretty butterfly",
    "a little yellow bird",
    "a funny frog",
    "a big red leaf",
    "a busy line of ants",
    "a white rabbit",
)


@dataclass(frozen=True)
class Thing:
    """Something a character loves; `use` says what one does with it ("it" is the thing)."""

    noun: str
    adjectives: tuple[str, ...]
    use: str
    tags: frozenset[str]  # which plots it fits: "high" can get stuck up high, "throw" ...


def _thing(noun: str, adjectives: tuple[str, ...], use: str, tags: str = "") -> Thing:
    return Thing(noun, adjectives, use, frozenset(tags.split()))


THINGS = (
    _thing("ball", COLORS + ("bouncy", "big"), "throw it high and catch it", "throw high toy"),
    _thing("kite", COLORS, "fly it high in the sky", "wind high toy"),
    _thing("teddy bear", ("soft", "brown", "fluffy", "old"), "hug it tight", "toy"),
    _thing("toy car", COLORS + ("fast", "little"), "race it across the floor", "toy"),
    _thing("doll", ("pretty", "little", "old", "soft"), "brush its long hair", "toy"),
    _thing("boat", ("little", "wooden", "paper", "red"), "sail it on the water", "toy"),
    _thing("hat", COLORS + ("big", "funny"), "wear it everywhere {he} went", "wind high wear"),
    _thing("book", ("big", "old", "new"), "read it before bed"),
    _thing("drum", ("little", "loud", "red"), "bang on it and sing", "toy"),
    _thing("balloon", COLORS, "hold it by its long string", "wind high"),
    _thing("scarf", COLORS + ("warm", "soft"), "wear it around {his} neck", "wear"),
    _thing("toy robot", ("little", "shiny", "silver"), "make it walk and beep", "toy"),
    _thing("toy train", COLORS + ("little", "long"), "push it along its tracks", "toy"),
    _thing("whistle", ("little", "shiny", "silver"), "blow it as loud as {he} could", "toy"),
    _thing("umbrella", COLORS, "twirl it around and around"),
    _thing("bucket", COLORS + ("little",), "fill it with sand and water", "toy"),
    _thing("blanket", ("soft", "warm", "fluffy", "blue"), "wrap it around {himself}"),
    _thing("flying disc", COLORS, "throw it to {his} friends", "throw high toy"),
    _thing("toy plane", COLORS + ("little", "fast"), "fly it around the yard", "throw wind high"),
    _thing("wagon", ("red", "little", "old", "wooden"), "pull it around the yard", "toy"),
    _thing("toy truck", COLORS + ("big", "dusty"), "fill it with rocks and push it", "toy"),
    _thing("music box", ("little", "pretty", "old", "golden"), "listen to its tinkly song"),
    _thing("puppet", ("funny", "soft", "little", "old"), "make it talk in a silly voice", "toy"),
    _thing("crown", ("shiny", "golden", "paper", "sparkly"), "wear it on {his} head", "wear"),
)


@dataclass(frozen=True)
class Place:
    """A place, what one sees there, and spots where something can hide."""

    name: str
    prep: str  # "in" the park, "at" the beach, "on" the farm
    sights: tuple[str, ...]
    spots: tuple[str, ...]


PLACES = (
    Place("park", "in", ("tall trees", "a big slide", "a little pond", "green grass"),
          ("under a bench", "behind a big tree", "in the tall grass", "near the slide")),
    Place("forest", "in", ("tall trees", "pretty flowers", "a little stream", "old logs"),
          ("under a pile of leaves", "behind a big rock", "next to an old log", "in a bush")),
    Place("garden", "in", ("red roses", "tall sunflowers", "green beans", "buzzing bees"),
          ("under a big leaf", "behind the flower pots", "next to the carrots", "in a bush")),
    Place("beach", "at", ("big waves", "soft sand", "pretty shells", "white birds"),
          ("under a pile of sand", "behind a big rock", "near the water", "next to a crab hole")),
    Place("farm", "on", ("a red barn", "cows and pigs", "a big tractor", "a field of corn"),
          ("in the hay", "behind the barn", "next to the pig pen", "under the tractor")),
    Place("meadow", "in", ("yellow flowers", "busy bees", "soft grass", "a little stream"),
          ("in the tall grass", "under a bush", "behind a big rock", "near the stream")),
    Place("backyard", "in", ("a swing", "a big tree", "a little fence", "a sandbox"),
          ("under the swing", "behind the fence", "under a bush", "next to the shed")),
    Place("playground", "at", ("a tall slide", "swings", "a sandbox", "a climbing frame"),
          ("in the sandbox", "under the slide", "behind the swings", "near the gate")),
    Place("lake", "by", ("blue water", "ducks", "a little dock", "tall reeds"),
          ("under the dock", "in the reeds", "behind a tree", "next to a big rock")),
    Place("river", "by", ("fast water", "smooth stones", "a wooden bridge", "green frogs"),
          ("under the bridge", "between two stones", "in the mud", "behind a bush")),
    Place("field", "in", ("tall corn", "a scarecrow", "hay bales", "red poppies"),
          ("behind a hay bale", "in the tall corn", "near the scarecrow", "under a bush")),
    Place("hill", "on", ("a big old tree", "green grass", "the whole town below", "wild flowers"),
          ("behind the old tree", "in the tall grass", "under a bush", "next to a big rock")),
)  # fmt: skip
