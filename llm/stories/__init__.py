"""A generator of simple children's stories: the built-in corpus that needs no download.

Each story has a beginning (who, where, what they love), a problem, and an ending that follows
from it, with dialogue in quotes. Stories are built from our own word lists and sentence templates,
chosen by a seeded random generator, so the same seed always gives the same text. The output has
the TinyStories `.txt` layout: paragraphs separated by "\\n", each story followed by
"\\n<|endoftext|>\\n".

The modules, each depending only on the ones before it:

    words.py   the vocabulary: names, animals, things, places
    writer.py  the cast, the template format and the Writer that fills templates
    plots.py   the plot templates and the functions that prepare them (PLOTS)
    engine.py  the scene, one story, the corpus (distinct stories, disjoint splits), the CLI

    uv run -m llm.stories --out data/stories --train-mb 5 --valid-mb 0.5 --seed 0
"""

from llm.stories.engine import (
    SEPARATOR,
    generate_stories,
    main,
    story_key,
    write_corpus,
    write_story,
)

__all__ = [
    "SEPARATOR",
    "generate_stories",
    "main",
    "story_key",
    "write_corpus",
    "write_story",
]
