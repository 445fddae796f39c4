"""How a story is written: the cast, the template format and the writer that fills templates.

A template is a block of text: paragraphs separated by a blank line, one sentence slot per line. A
line starting with "| " is another way to say the slot above it, one starting with "? " is a slot
that is used half of the time. Slots are `str.format` strings filled from the writer's context:
`{name}`, `{he}`, `{his}`... are the hero, `{fname}`, `{fhe}`... the friend, `{pname}`... the
parent (see `Writer.add_character`); `{Name}` is `{name}` with a capital letter.

The plots (`llm.stories.plots`) write templates and set context values through a `Writer`;
the engine (`llm.stories.engine`) sets up the scene and asks the writer to render the opening
and a plot.
"""

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Character:
    name: str  # "Lily", or "the owl" for a helper without a name
    kind: str  # "girl", "dog", ...
    female: bool

    @property
    def pronouns(self) -> tuple[str, str, str, str]:
        return ("she", "her", "her", "herself") if self.female else ("he", "him", "his", "himself")


def with_article(phrase: str) -> str:
    """'a red ball', 'an orange ball' (our word lists avoid words like 'hour' and 'unicorn')."""
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


class _Context(dict):
    """Template values; `{Name}` is `{name}` with a capital first letter (for sentence starts)."""

    def __missing__(self, key: str) -> str:
        lower = key[0].lower() + key[1:]
        if lower == key or lower not in self:
            raise KeyError(key)
        value = self[lower]
        return value[0].upper() + value[1:]


@functools.cache
def _parse(template: str) -> tuple[tuple[tuple[bool, tuple[str, ...]], ...], ...]:
    """Template -> paragraphs -> slots (optional?, ways to say it). See the module docstring."""
    paragraphs = []
    for block in template.strip().split("\n\n"):
        slots: list[tuple[bool, list[str]]] = []
        for line in block.strip().splitlines():
            if line.startswith("| "):
                slots[-1][1].append(line[2:])
            elif line.startswith("? "):
                slots.append((True, [line[2:]]))
            else:
                slots.append((False, [line]))
        paragraphs.append(tuple((optional, tuple(ways)) for optional, ways in slots))
    return tuple(paragraphs)


class Writer:
    """Holds the random generator and the story context; fills templates from them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.ctx = _Context()
        self.cast: dict[str, Character] = {}

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def fill(self, text: str) -> str:
        return text.format_map(self.ctx)

    def render(self, template: str) -> list[str]:
        paragraphs = []
        for slots in _parse(template):
            sentences = [
                self.fill(self.pick(ways))
                for optional, ways in slots
                if not optional or self.rng.random() < 0.5
            ]
            paragraphs.append(" ".join(sentences))
        return paragraphs

    def add_character(self, prefix: str, who: Character) -> None:
        """Sets {name} {he} {him} {his} {himself} {kind} {who} with a prefix ('' is the hero).

        {who} is "Tim" for a child and "Spot the dog" for an animal.
        """
        he, him, his, himself = who.pronouns
        child = who.kind in ("girl", "boy")
        values = {
            "name": who.name,
            "kind": who.kind,
            "he": he,
            "him": him,
            "his": his,
            "himself": himself,
            "who": who.name if child else f"{who.name} the {who.kind}",
        }
        self.ctx.update({prefix + key: value for key, value in values.items()})
        self.cast[prefix] = who
