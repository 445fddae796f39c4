"""The built-in story corpus: determinism, disjoint splits, format, size, vocabulary, grammar."""

import hashlib
import random
import re

import pytest

from llm import stories
from llm.bpe_tokenizer import EOT
from llm.stories import engine, generate_stories, write_corpus
from llm.stories.words import BOY_NAMES, GIRL_NAMES


@pytest.fixture(scope="module")
def sample() -> list[str]:
    return list(generate_stories(target_bytes=1_000_000, seed=0))


def _read_stories(path) -> list[str]:
    """Splits a TinyStories-style file independently of the generator's own helpers."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n<|endoftext|>\n")
    return text[: -len("\n<|endoftext|>\n")].split("\n<|endoftext|>\n")


def test_same_seed_same_stories_other_seed_or_stream_differs():
    a = list(generate_stories(num_stories=50, seed=7))
    assert a == list(generate_stories(num_stories=50, seed=7))
    assert len(set(a)) == 50
    assert not set(a) & set(generate_stories(num_stories=50, seed=8))
    assert not set(a) & set(generate_stories(num_stories=50, seed=7, stream="valid"))


def test_exactly_one_size_argument():
    with pytest.raises(ValueError, match="exactly one of num_stories or target_bytes"):
        next(generate_stories(seed=0))
    with pytest.raises(ValueError, match="exactly one of num_stories or target_bytes"):
        next(generate_stories(num_stories=3, target_bytes=100, seed=0))


def test_sizes_must_be_positive(tmp_path, capsys):
    with pytest.raises(ValueError, match="sizes must be positive"):
        write_corpus(tmp_path, 1000, 0, progress=False)
    with pytest.raises(SystemExit) as exit_info:
        stories.main(["--out", str(tmp_path), "--train-mb", "-1"])
    assert exit_info.value.code == 2
    assert "--train-mb and --valid-mb must be positive" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_corpus_files_format_size_and_disjointness(tmp_path):
    train, valid = write_corpus(tmp_path, 200_000, 40_000, seed=3, progress=False)
    assert (train.name, valid.name) == ("train.txt", "valid.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt", "valid.txt"]  # no temp
    for path, target in ((train, 200_000), (valid, 40_000)):
        size = path.stat().st_size
        assert target <= size < target + 2_000  # stops right after reaching the target
        items = _read_stories(path)
        assert len(items) == len(set(items))  # no duplicate inside a split
        for story in items:
            assert EOT not in story and story == story.strip()
            assert "\n\n" not in story and story.count("\n") >= 2  # 3+ paragraphs, single \n
    assert not set(_read_stories(train)) & set(_read_stories(valid))
    # deterministic files for a seed
    again = write_corpus(tmp_path / "again", 200_000, 40_000, seed=3, progress=False)
    assert again[0].read_bytes() == train.read_bytes()
    assert again[1].read_bytes() == valid.read_bytes()


def test_corpus_bytes_are_pinned(tmp_path):
    """The same seed gives the same corpus across code changes (refactors, Python upgrades):
    runs stay reproducible. Update these hashes only when the stories change on purpose."""
    paths = write_corpus(tmp_path, 50_000, 5_000, seed=7, progress=False)
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == [
        "1528368231a4ec0801572330a64aa19fb11995281ea3f8f393fc2d46c122e0df",
        "654ae339b90e7d6dd171ec6086308eb07b83bcc76321d41c96436290650bdf23",
    ]


def test_train_skips_validation_stories_even_when_streams_collide(tmp_path, monkeypatch):
    """With only 40 possible stories the two streams must collide; train has to avoid valid's."""
    pool = [f"Story number {i}.\nIt has a middle.\nAnd an end." for i in range(40)]
    monkeypatch.setattr(engine, "write_story", lambda rng: rng.choice(pool))
    one = len(pool[0]) + len("\n<|endoftext|>\n")
    train, valid = write_corpus(tmp_path, 25 * one, 10 * one, seed=0, progress=False)
    train_set, valid_set = set(_read_stories(train)), set(_read_stories(valid))
    assert (len(train_set), len(valid_set)) == (25, 10)
    assert not train_set & valid_set
    with pytest.raises(RuntimeError, match="repeating itself"):  # only 30 are left for train
        write_corpus(tmp_path / "big", 31 * one, 10 * one, seed=0, progress=False)


def test_vocabulary_is_small_but_not_trivial(sample):
    words = set(re.findall(r"[a-z]+", " ".join(sample).lower()))
    assert 500 < len(words) < 3000


def test_dialogue_paragraphs_and_lengths(sample):
    with_dialogue = sum('"' in s for s in sample)
    assert with_dialogue > 0.9 * len(sample)
    for story in sample[:2000]:
        for paragraph in story.split("\n"):
            assert paragraph.count('"') % 2 == 0, paragraph  # quotes are closed
    lengths = [len(s) for s in sample]
    assert min(lengths) > 300 and max(lengths) < 2000
    assert len({s.split("\n")[1][:40] for s in sample}) > 50  # many different plot beginnings


def test_grammar_basics(sample):
    text = "\n".join(sample)
    assert "{" not in text and "}" not in text  # every template slot was filled
    assert not re.search(r"\b[Aa] [aeiouAEIOU]", text)  # "a apple"
    assert not re.search(r"\b[Aa]n [b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z]", text)  # "an ball"
    assert not re.search(r"  |\s[,.!?]|\b(\w+) \1\b", text)  # double space, " ,", "the the"
    sentence_starts = re.findall(r"(?:^|[.!?] )([a-z]\w*)", text, flags=re.MULTILINE)
    assert sentence_starts == []  # sentences begin with a capital letter
    assert text.isascii()


def test_pronouns_agree_with_the_child_hero(sample):
    girls, boys = set(GIRL_NAMES), set(BOY_NAMES)
    pattern = r"\b([A-Z][a-z]+) (?:loved|held|closed|wiped|stamped|put on) (his|her)\b"
    checked = 0
    for name, pronoun in re.findall(pattern, "\n".join(sample)):
        if name in girls or name in boys:
            assert pronoun == ("her" if name in girls else "his"), name
            checked += 1
    assert checked > 200
    for kind, name, pronoun in re.findall(
        r"\b(girl|boy) named (\w+)\. (He|She) ", " ".join(sample)
    ):
        assert pronoun == ("She" if kind == "girl" else "He"), name


def test_cli_writes_the_corpus(tmp_path, capsys):
    stories.main(
        ["--out", str(tmp_path), "--train-mb", "0.03", "--valid-mb", "0.01", "--show", "1"]
    )
    out = capsys.readouterr().out
    assert "train.txt" in out and "valid.txt" in out
    assert next(generate_stories(num_stories=1, seed=0)) in out
    assert (tmp_path / "train.txt").stat().st_size >= 30_000


def test_story_key_ignores_whitespace_only():
    assert stories.story_key("a b\nc") == stories.story_key("a  b c ")
    assert stories.story_key("a b c") != stories.story_key("a b d")


def test_write_story_is_a_pure_function_of_the_rng():
    assert stories.write_story(random.Random(5)) == stories.write_story(random.Random(5))
