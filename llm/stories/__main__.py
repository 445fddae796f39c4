"""`uv run -m llm.stories --out DIR ...`: write the story corpus (see llm.stories.engine.main)."""

from llm.stories.engine import main

main()
