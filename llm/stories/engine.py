"""The engine of the story generator: it sets the scene, writes one story, and builds the corpus
(distinct stories, disjoint train/valid files, the CLI). The package docstring (`llm.stories`)
describes the stories and the modules this one uses.
"""

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llm.atomic_write import atomic_write
from llm.bpe_tokenizer import EOT
from llm.cli import parse, run_main
from llm.paths import check_writable_dir
from llm.stories.plots import PLOTS
from llm.stories.words import (
    ANIMALS,
    BOY_NAMES,
    CHILD_HOMES,
    DISTRACTIONS,
    GAMES,
    GIRL_NAMES,
    GOOD_FEELINGS,
    PARENTS,
    PET_NAMES,
    PLACES,
    SAD_FEELINGS,
    SNACKS,
    THINGS,
    TIMES,
    TRAITS,
    WEATHERS,
    Thing,
)
from llm.stories.writer import Character, Writer, with_article

SEPARATOR = "\n" + EOT + "\n"


# ---------------------------------------------------------------------------------------------
# One story: the cast, the setting, the opening paragraph and a plot
# ---------------------------------------------------------------------------------------------


def _new_character(w: Writer, taken: set[str], animal: bool) -> Character:
    female = w.rng.random() < 0.5
    if animal:
        kind = w.pick(tuple(ANIMALS))
        names = PET_NAMES + (GIRL_NAMES if female else BOY_NAMES)
    else:
        kind = "girl" if female else "boy"
        names = GIRL_NAMES if female else BOY_NAMES
    name = w.pick(tuple(n for n in names if n not in taken))
    taken.add(name)
    return Character(name, kind, female)


def _set_thing(w: Writer, thing: Thing) -> None:
    adjective = w.pick(thing.adjectives)
    w.ctx.update(
        obj=thing.noun,
        dobj=f"{adjective} {thing.noun}",
        use=w.fill(thing.use),
        a_obj=with_article(f"{adjective} {thing.noun}"),
        obj_tags=thing.tags,
    )


def _set_scene(w: Writer, needs: set[str]) -> None:
    """Chooses the hero, a friend, a parent, a loved thing and a place."""
    taken: set[str] = set()
    animal = "child" not in needs and w.rng.random() < 0.35
    hero = _new_character(w, taken, animal)
    friend = _new_character(w, taken, animal or w.rng.random() < 0.25)
    parent = Character(*w.pick(PARENTS))
    w.add_character("", hero)
    w.add_character("f", friend)
    w.add_character("p", parent)
    trait = w.pick(TRAITS)
    size = w.pick(("little ", "little ", "small ", "", "young "))
    move, home = ANIMALS.get(hero.kind) or (
        w.pick(("ran", "walked", "skipped")),
        w.pick(CHILD_HOMES),
    )
    shy = w.pick(("little", "young", "shy", "quiet"))
    w.ctx.update(
        trait=trait,
        a_hero=with_article(f"{trait} {size}{hero.kind}"),
        move=move,
        home=home,
        a_friend=with_article(f"{shy} {friend.kind}"),
    )
    _set_thing(w, w.pick([t for t in THINGS if needs - {"child"} <= t.tags]))
    place = w.pick(PLACES)
    spots = w.rng.sample(place.spots, 3)
    w.ctx.update(
        place=f"the {place.name}",
        at_place=f"{place.prep} the {place.name}",
        sight=w.pick(place.sights),
        spot1=spots[0],
        spot2=spots[1],
        spot3=spots[2],
        time=w.pick(TIMES),
        weather=w.pick(WEATHERS),
        game=w.pick(GAMES),
        snack=w.pick(SNACKS),
        good=w.pick(GOOD_FEELINGS),
        bad=w.pick(SAD_FEELINGS),
        distraction=w.pick(DISTRACTIONS),
    )


OPENING = """
Once upon a time, there was {a_hero} named {name}.
| Once upon a time, there was {a_hero} named {name}. {He} lived {home}.
| There once was {a_hero} called {name}, who lived {home}.
| {Name} was {a_hero} who lived {home}.
| Once upon a time, {home}, there lived {a_hero} named {name}.
| Once there was {a_hero} named {name}. Everyone said that {he} was very {trait}.
{Name} had {a_obj}, and {he} loved it very much.
| {His} favorite thing in the whole world was {a_obj}.
| {Name} loved {his} {dobj} more than anything.
| {He} had {a_obj} that {he} took everywhere.
? Every day, {he} liked to {use}.
| {He} liked to {use}.
"""


def start_story(rng: random.Random) -> tuple[Writer, Callable[[Writer], str], str]:
    """Picks a plot and sets the scene: returns the writer, the plot and the opening paragraph."""
    w = Writer(rng)
    plot, needs = w.pick(PLOTS)
    _set_scene(w, set(needs.split()))
    return w, plot, " ".join(w.render(OPENING))


def write_story(rng: random.Random) -> str:
    """One story: the opening paragraph, then the paragraphs of a plot."""
    w, plot, opening = start_story(rng)
    return "\n".join([opening, *w.render(plot(w))])


# ---------------------------------------------------------------------------------------------
# Corpus: streams of distinct stories, train/valid files
# ---------------------------------------------------------------------------------------------


def story_key(story: str) -> bytes:
    """Identity of a story for deduplication: sha256 of its text with whitespace collapsed."""
    return hashlib.sha256(" ".join(story.split()).encode()).digest()


def generate_stories(
    num_stories: int | None = None,
    target_bytes: int | None = None,
    seed: int = 0,
    stream: str = "train",
    exclude: set[bytes] | frozenset[bytes] = frozenset(),
) -> Iterator[str]:
    """Yields distinct stories (without separator), the same ones for the same (seed, stream).

    Stops after `num_stories`, or once the stories with their separators reach `target_bytes`.
    Stories whose `story_key` is in `exclude` (e.g. the validation split) are skipped.
    """
    if (num_stories is None) == (target_bytes is None):
        raise ValueError("give exactly one of num_stories or target_bytes")
    rng = random.Random(f"{seed}/{stream}")
    seen: set[bytes] = set()
    count = size = misses = 0
    while count < num_stories if num_stories is not None else size < target_bytes:
        story = write_story(rng)
        key = story_key(story)
        if key in seen or key in exclude:
            misses += 1
            if misses > 10_000:
                raise RuntimeError("the story generator keeps repeating itself: no new stories")
            continue
        seen.add(key)
        misses = 0
        count += 1
        size += len((story + SEPARATOR).encode())
        yield story


def _write_split(
    path: Path, stories: Iterator[str], nbytes: int, keys: set[bytes] | None, progress: bool
) -> None:
    """Writes stories atomically (temp file, then rename), adding their keys to `keys`."""
    bar = tqdm(total=nbytes, unit="B", unit_scale=True, desc=path.name, disable=not progress)
    try:
        with atomic_write(path, "w") as f:
            for story in stories:
                text = story + SEPARATOR
                f.write(text)
                bar.update(len(text.encode()))
                if keys is not None:
                    keys.add(story_key(story))
        bar.total = bar.n  # the last story goes a little past the target
    finally:
        bar.close()


def write_corpus(
    out_dir: str | Path, train_bytes: int, valid_bytes: int, seed: int = 0, progress: bool = True
) -> tuple[Path, Path]:
    """Writes `train.txt` and `valid.txt` (each at least the given size) that share no story.

    The validation split has its own random stream; train skips any story that is in it.
    """
    if train_bytes <= 0 or valid_bytes <= 0:
        raise ValueError(f"sizes must be positive, got {train_bytes=} {valid_bytes=}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, valid = out / "train.txt", out / "valid.txt"
    valid_keys: set[bytes] = set()
    stories = generate_stories(target_bytes=valid_bytes, seed=seed, stream="valid")
    _write_split(valid, stories, valid_bytes, valid_keys, progress)
    stories = generate_stories(
        target_bytes=train_bytes, seed=seed, stream="train", exclude=valid_keys
    )
    _write_split(train, stories, train_bytes, None, progress)
    return train, valid


@dataclass
class CorpusConfig:
    """`uv run -m llm.stories`: write the built-in children's story corpus."""

    out: str  # directory for train.txt and valid.txt
    train_mb: float = 5.0  # train size, MB (10^6 bytes)
    valid_mb: float = 0.5  # valid size, MB (10^6 bytes)
    seed: int = 0  # the corpus is a function of the seed
    show: int = 0  # also print this many train stories

    def __post_init__(self) -> None:
        if not (self.train_mb > 0 and self.valid_mb > 0):
            raise ValueError("--train-mb and --valid-mb must be positive")
        check_writable_dir(self.out, "--out")


def main(argv: list[str] | None = None) -> None:
    prog = "uv run -m llm.stories"
    config = run_main(
        lambda: parse(CorpusConfig, argv, description=CorpusConfig.__doc__, prog=prog)
    )
    paths = run_main(
        lambda: write_corpus(
            config.out, int(config.train_mb * 1e6), int(config.valid_mb * 1e6), config.seed
        ),
        errors=(OSError,),
    )
    for path in paths:
        text = path.read_text(encoding="utf-8")
        words = len(set(re.findall(r"[a-z]+", text.lower())))
        print(
            f"{path}: {len(text.encode()):,} bytes, {text.count(EOT):,} stories, "
            f"{words:,} distinct words"
        )
    for story in generate_stories(num_stories=config.show, seed=config.seed, stream="train"):
        print(f"\n{story}")
