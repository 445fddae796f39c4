"""Instruction data from the story generator: the built-in fine-tuning set that needs no download.

Each pair asks for a story with four elements the story generator chose, and answers with the
story it wrote around them:

    Write a story about a dog named Max who is brave. Include a kite.
    -> Once upon a time, there was a brave little dog named Max. ... his red kite ...

A model pretrained on the plain stories writes stories, but not the one asked for: the
`score` of its answers, the share that contain every requested element (the kind of hero, its
name, its trait and the thing, as whole words), starts near zero; fine-tuning on the pairs
teaches it to read the instruction. The held-out split has its own random stream, and no
instruction of it is in the training split.
"""

import random
import re

from llm.stories.engine import start_story
from llm.stories.writer import with_article

MAX_CHARS = 700  # shorter stories only, so that instruction and story fit a 256-token context


def instruction_pair(rng: random.Random) -> dict:
    """One {"prompt", "completion", "elements"} record: the instruction, the story, and the
    words the story must contain."""
    w, plot, opening = start_story(rng)
    story = "\n".join([opening, *w.render(plot(w))])
    kind, name, trait, thing = w.ctx["kind"], w.ctx["name"], w.ctx["trait"], w.ctx["obj"]
    prompt = (
        f"Write a story about {with_article(kind)} named {name} who is {trait}. "
        f"Include {with_article(thing)}."
    )
    return {"prompt": prompt, "completion": story, "elements": [kind, name, trait, thing]}


def instruction_data(
    num_train: int, num_valid: int, seed: int = 0, max_chars: int = MAX_CHARS
) -> tuple[list[dict], list[dict]]:
    """(train, valid) records with distinct instructions, none of valid's in train; stories of
    at most max_chars characters."""
    valid = _pairs(num_valid, random.Random(f"{seed}/instructions-valid"), max_chars, set())
    held_out = {r["prompt"] for r in valid}
    train = _pairs(num_train, random.Random(f"{seed}/instructions-train"), max_chars, held_out)
    return train, valid


def _pairs(n: int, rng: random.Random, max_chars: int, exclude: set[str]) -> list[dict]:
    records, seen = [], set(exclude)
    while len(records) < n:
        record = instruction_pair(rng)
        if len(record["completion"]) <= max_chars and record["prompt"] not in seen:
            seen.add(record["prompt"])
            records.append(record)
    return records


def has_elements(story: str, elements: list[str]) -> bool:
    """Whether the story holds every element as a whole word (any case)."""
    return all(re.search(rf"\b{re.escape(e)}\b", story, re.IGNORECASE) for e in elements)


def score(stories: list[str], records: list[dict]) -> float:
    """The share of stories that contain every element their instruction asked for."""
    hits = [has_elements(s, r["elements"]) for s, r in zip(stories, records, strict=True)]
    return sum(hits) / len(hits)
