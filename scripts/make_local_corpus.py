"""Write inventories/data/local-prompts.jsonl: a small labelled prompt corpus in three topics.

The local inventory fits its router on it, so the embedded default needs no download. The
corpus is generated from fixed word lists with a fixed seed: rerunning gives the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "code": (
        [
            "python",
            "function",
            "compile",
            "bug",
            "recursion",
            "array",
            "pointer",
            "rust",
            "thread",
            "database",
            "query",
            "index",
            "refactor",
            "unit",
            "test",
            "api",
            "json",
            "parser",
            "kernel",
            "memory",
            "allocator",
            "docker",
            "git",
            "branch",
            "merge",
            "lambda",
            "class",
        ],
        [
            "How do I fix this {a} error in my {b} code?",
            "Explain {a} and {b} with an example.",
            "Write a {a} that handles {b} safely.",
            "Why is my {a} slower than the {b} version?",
            "Review this {a}: it leaks {b} under load.",
        ],
    ),
    "cooking": (
        [
            "recipe",
            "garlic",
            "onion",
            "bake",
            "oven",
            "dough",
            "sourdough",
            "butter",
            "sauce",
            "simmer",
            "roast",
            "chicken",
            "pasta",
            "tomato",
            "basil",
            "spice",
            "curry",
            "rice",
            "flour",
            "yeast",
            "caramel",
            "dessert",
            "knife",
            "braise",
            "stock",
            "vegetable",
            "grill",
        ],
        [
            "Give me a {a} recipe with {b}.",
            "How long should I {a} the {b}?",
            "What can I use instead of {a} in a {b} dish?",
            "My {a} came out dry; what about the {b}?",
            "Plan a dinner around {a} and {b}.",
        ],
    ),
    "travel": (
        [
            "flight",
            "hotel",
            "itinerary",
            "passport",
            "visa",
            "museum",
            "beach",
            "mountain",
            "train",
            "luggage",
            "airport",
            "hostel",
            "island",
            "tour",
            "guide",
            "budget",
            "backpack",
            "city",
            "ferry",
            "hiking",
            "festival",
            "currency",
            "embassy",
            "cruise",
            "village",
            "coast",
            "map",
        ],
        [
            "Plan a week-long {a} trip with a {b}.",
            "Is a {a} needed to visit the {b}?",
            "Cheapest way to reach the {a} from the {b}?",
            "What should I pack for a {a} near the {b}?",
            "Recommend a {a} close to the {b}.",
        ],
    ),
}


def main() -> None:
    rng = random.Random(0)
    rows = []
    for label, (words, templates) in TOPICS.items():
        for _ in range(200):
            a, b = rng.sample(words, 2)
            rows.append({"text": rng.choice(templates).format(a=a, b=b), "label": label})
    rng.shuffle(rows)
    out = Path(__file__).resolve().parent.parent / "inventories" / "data" / "local-prompts.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts to {out}")


if __name__ == "__main__":
    main()
