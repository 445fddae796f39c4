"""docs/architecture.md stays true to the code: its picture's arrows are exactly the imports
between the modules of llm/ (the story generator's modules counted as one box)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def box(module: str) -> str:
    """The box of a module in the picture: `llm.stories.engine` -> `stories`, and `llm.__main__`
    (`uv run -m llm`) -> `quickstart`."""
    name = module.split(".")[1]
    return "quickstart" if name == "__main__" else name


def imports_in_code() -> set[tuple[str, str]]:
    edges = set()
    for path in (REPO / "llm").rglob("*.py"):
        here = box(".".join(path.relative_to(REPO).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "llm":
                    names = [f"llm.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("llm.") and box(name) != here:
                    edges.add((here, box(name)))
    return edges


def arrows_in_doc() -> set[tuple[str, str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    (diagram,) = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    return set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", diagram, re.M))


def test_the_architecture_picture_has_exactly_the_imports_of_the_code():
    doc, code = arrows_in_doc(), imports_in_code()
    assert doc - code == set(), "arrows in docs/architecture.md that the code does not have"
    assert code - doc == set(), "imports missing from docs/architecture.md"


def test_every_module_has_a_sentence():
    text = (REPO / "docs" / "architecture.md").read_text()
    modules = {box(f"llm.{p.stem}") for p in (REPO / "llm").glob("*.py") if p.stem != "__init__"}
    modules.add("stories")
    missing = [m for m in sorted(modules) if f"`{m}`" not in text]
    assert not missing, f"modules without a sentence in docs/architecture.md: {missing}"


def test_the_end_of_text_token_is_written_out_once():
    """`<|endoftext|>` is llm.bpe_tokenizer.EOT everywhere else, so no copy can drift."""
    paths = [*(REPO / "llm").rglob("*.py"), REPO / "inspect_data.py"]
    holders = [p.relative_to(REPO).as_posix() for p in paths if '"<|endoftext|>"' in p.read_text()]
    assert holders == ["llm/bpe_tokenizer.py"]
