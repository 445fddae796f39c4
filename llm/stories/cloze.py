"""Story cloze: choose the true ending of a story among 4, a test the models trained here can pass.

Benchmarks like HellaSwag need knowledge that a model trained on these stories does not have; this
task asks only what the stories teach. Each example is a story cut before its ending, the true
ending, and 3 distractors: the endings of other plots told with the same scene (the same hero,
friend, parent, loved thing and place, drawn once). The names and things in an ending therefore
never give it away: only whether it follows from what happened does.

The ending is the last two sentences of the story's last paragraph, or the last one when the
paragraph has only two, so that a sentence of it stays in the context. The cut is at a sentence
break, the space after ".", "!" or "?" (and a closing quote), outside quotes, and that space is
the harness's target delimiter: context + " " + true ending is the whole story.

The stories come from their own random stream, "{seed}/cloze", which `write_corpus` never uses
(it uses "{seed}/train" and "{seed}/valid"). The generator's space is large: different streams
could still write the same story by chance, but none of 2,000 examples' stories is in the default
corpus of `uv run -m llm` (3 MB of train stories, seed 0).
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from llm.stories.engine import start_story
from llm.stories.plots import PLOTS
from llm.stories.words import BOY_NAMES, GIRL_NAMES, PARENTS, PET_NAMES
from llm.stories.writer import Writer

CLOZE_STREAM = "cloze"  # the held-out random stream; the corpus uses "train" and "valid"
NUM_CHOICES = 4
NAMES = frozenset((*BOY_NAMES, *GIRL_NAMES, *PET_NAMES, *(name for name, *_ in PARENTS)))

# A sentence ends with . ! or ? and maybe a closing quote; the next one starts with a capital
# letter or an opening quote. (Whether the quote closes is checked by counting.)
_BREAK = re.compile(r'[.!?]"? (?=["A-Z])')


@dataclass(frozen=True)
class ClozeExample:
    context: str  # the story up to its ending
    endings: list[str]  # NUM_CHOICES candidate endings (each follows the context after " ")
    target: int  # the index of the true ending


def split_ending(story: str) -> tuple[str, str]:
    """(context, ending), story == context + " " + ending: the ending is the last two sentences of
    the last paragraph, or the last one when it has two. ValueError for a one-sentence paragraph."""
    last = story.rfind("\n") + 1
    breaks = [
        m.end() - 1
        for m in _BREAK.finditer(story, last)
        if story.count('"', 0, m.end()) % 2 == 0  # not inside a quote
    ]
    if not breaks:
        raise ValueError(f"the last paragraph is a single sentence: {story[last:]!r}")
    cut = breaks[-2] if len(breaks) > 1 else breaks[-1]
    return story[:cut], story[cut + 1 :]


def _fits(needs: str, scene: Writer) -> bool:
    """Whether a plot can be told with this scene: its thing has the tags the plot needs, and
    the hero is a child if it needs one (what `_set_scene` in engine.py ensures for its plot)."""
    tags = set(needs.split())
    child = scene.cast[""].kind in ("girl", "boy")
    return tags - {"child"} <= scene.ctx["obj_tags"] and (child or "child" not in tags)


def _told_with(scene: Writer, plot: Callable[[Writer], str], rng: random.Random) -> str:
    """The paragraphs of `plot` told with a copy of the scene (plots add to the context)."""
    w = Writer(rng)
    w.ctx.update(scene.ctx)
    w.cast.update(scene.cast)
    return "\n".join(w.render(plot(w)))


def _names(text: str) -> set[str]:
    """The names of people and pets in a text ("Lily", "Spot", "Grandma")."""
    return NAMES & set(re.findall(r"[A-Z][a-z]+", text))


def make_example(rng: random.Random) -> tuple[str, ClozeExample]:
    """One story and its cloze example: 3 other plots with the same scene give the distractors."""
    w, plot, opening = start_story(rng)
    scene = Writer(rng)
    scene.ctx.update(w.ctx)
    scene.cast.update(w.cast)
    story = "\n".join([opening, *w.render(plot(w))])
    context, true_ending = split_ending(story)
    endings = [true_ending]
    others = [other for other, needs in PLOTS if other is not plot and _fits(needs, scene)]
    for other in rng.sample(others, len(others)):
        ending = split_ending(_told_with(scene, other, rng))[1]
        if ending not in endings and _names(ending) <= _names(context):
            endings.append(ending)
        if len(endings) == NUM_CHOICES:
            break
    rng.shuffle(endings)
    return story, ClozeExample(context, endings, endings.index(true_ending))


def cloze_examples(num_examples: int, seed: int = 0) -> list[ClozeExample]:
    """The first `num_examples` examples of the held-out stream, the same ones for the same seed.
    (Their stories are distinct in practice: 2,000 examples hold 2,000 different stories.)"""
    rng = random.Random(f"{seed}/{CLOZE_STREAM}")
    return [make_example(rng)[1] for _ in range(num_examples)]
