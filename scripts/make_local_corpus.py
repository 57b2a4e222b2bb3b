"""Write inventories/data/local-prompts.jsonl: a labelled prompt corpus in eight topics.

The local inventories fit their router on it (k = 8 for local.yaml, one cluster per expert)
and the generated experts train their tokenizer on it, so the embedded default needs no
download. Each topic has its own question shapes and its own words, the way real traffic to
a coding or a cooking expert differs, so k-means can find the topics again (check it with
``expert-deploy router eval --corpus inventories/data/local-prompts.jsonl --k 8``).

Generated from fixed lists with a fixed seed: rerunning gives the same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PROMPTS_PER_TOPIC = 60

#: topic → (space-separated words for {a} and {b}, question shapes). Every shape of a topic
#: also names a few of its everyday words (code, recipe, trip, ...), as real questions do.
TOPICS: dict[str, tuple[str, list[str]]] = {
    "programming": (
        "python function compiler recursion array pointer rust thread database query "
        "index refactor unittest api json parser kernel allocator docker git branch merge "
        "lambda class closure iterator regex segfault deadlock mutex typescript",
        [
            "How do I fix this {a} bug in my {b} code?",
            "Explain the difference between a {a} and a {b} when I program.",
            "Write code for a function that uses a {a} to parse {b} input.",
            "Why does my program crash with a {a} bug in the {b} code?",
            "Review my code: the {a} leaks memory when the {b} function runs.",
            "How should I debug a program where the {a} calls the {b}?",
            "My code hangs in the {a}; is the {b} a bug in my program?",
            "Refactor this code so the {a} and the {b} function are easier to debug.",
        ],
    ),
    "cooking": (
        "garlic onion sourdough butter sauce chicken pasta tomato basil curry rice flour "
        "yeast caramel dessert braise stock vegetables risotto lentils cinnamon salmon "
        "dumplings pastry custard marinade skillet broth chocolate",
        [
            "Give me an easy dinner recipe to cook with {a} and {b}.",
            "How long should I cook the {a} before adding {b} to the recipe?",
            "What can I substitute for {a} when I bake a recipe with {b}?",
            "My {a} dish always comes out dry; should I cook the {b} longer?",
            "Plan a dinner recipe around {a} and {b} for six guests.",
            "Which spices make a tasty dish with roasted {a} and {b}?",
            "How do I cook {a} in the oven, and does the recipe need {b}?",
            "Can I cook the {a} a day ahead and serve the dish with {b}?",
        ],
    ),
    "travel": (
        "hotel itinerary passport visa museum beach mountains train luggage "
        "airport hostel island tour guide backpack ferry hiking festival currency embassy "
        "cruise village coastline layover jetlag sightseeing rental",
        [
            "Plan a week-long trip with a {a} and a visit to the {b}.",
            "Do I need a {a} to travel to the {b} on my trip?",
            "What is the cheapest way to travel from the {a} to the {b}?",
            "What should I pack for a trip with a {a} near the {b}?",
            "Recommend a {a} close to the {b} for my travel plans.",
            "Is it safe to travel with a {a} and book a flight to the {b}?",
            "How early should my flight reach the {a} before the {b} on this trip?",
            "Suggest a travel itinerary with a {a} and the {b} for a short trip.",
        ],
    ),
    "finance": (
        "budget savings mortgage retirement pension stocks bonds index-fund dividends "
        "inflation interest loan credit debt taxes salary emergency-fund portfolio "
        "brokerage insurance annuity refinancing rent expenses bank crypto payroll",
        [
            "Should I pay off my {a} before I invest money in {b}?",
            "How much money should go to {a} versus {b} each month?",
            "Explain how {a} affects the money I invest in {b}.",
            "Is it smart to invest my {a} money into {b} this year?",
            "How do I budget my money to cover {a} and {b}?",
            "What are the tax rules on money from {a} compared with {b}?",
            "Compare the financial risk of {a} and {b} if I invest for retirement.",
            "Can I save money on my {a} to invest more in {b}?",
        ],
    ),
    "fitness": (
        "squats deadlifts pushups running marathon cardio stretching protein calories "
        "muscles treadmill cycling swimming yoga plank dumbbells kettlebell "
        "endurance recovery soreness hamstrings sprint intervals posture reps lunges",
        [
            "Design a workout plan with {a} and {b} three times a week at the gym.",
            "How many {a} should I do in my workout to train for {b}?",
            "Is it better to train {a} before or after {b} in a gym workout?",
            "My knees hurt after {a}; should my workout switch to {b} training?",
            "How much protein do I need while I train {a} and {b} in my workout?",
            "What warm-up before a workout prevents injury from {a} and {b}?",
            "How do I train my {a} form at the gym without losing {b}?",
            "Create a gym workout mixing {a} with {b} to train endurance.",
        ],
    ),
    "gardening": (
        "tomatoes roses compost seedlings fertilizer mulch pruning aphids lawn "
        "succulents orchids herbs lettuce potatoes raised-beds greenhouse "
        "perennials bulbs hedges weeds sunflowers shrubs seeds pots blossoms",
        [
            "When should I plant {a} in my garden next to {b}?",
            "How often do I water the {a} I plant in the garden with {b}?",
            "What fertilizer for garden soil keeps my {a} and {b} plants healthy?",
            "Why are the leaves of my garden {a} turning yellow near the {b} plants?",
            "How do I get rid of pests on my {a} plants without harming the {b} in my garden?",
            "Can I plant {a} and {b} together in a shady garden bed?",
            "What is the best time of year to plant {a} and prune {b} in the garden?",
            "How do I prepare garden soil to plant {a} after harvesting {b}?",
        ],
    ),
    "music": (
        "guitar piano chords scales melody rhythm drums bass violin harmony songwriting "
        "lyrics tempo metronome vocals singing jazz blues arpeggios fingerpicking "
        "improvisation chorus verse ukulele saxophone recording keys notes",
        [
            "How do I practice {a} on the {b} when I play music as a beginner?",
            "Explain the music theory behind the {a} and {b} in a song.",
            "Suggest exercises to practice my {a} when I play {b} music.",
            "How do I write a song with a catchy {a} and a strong {b}?",
            "What are common {a} used when you play {b} music in a song?",
            "My {a} sounds out of tune in the song; how do I tune the {b}?",
            "How long should I practice {a} each day to play {b} music?",
            "Can you teach me to play {a} over a simple {b} song?",
        ],
    ),
    "astronomy": (
        "planets galaxies telescope nebula supernova comet asteroid moon orbit eclipse "
        "black-hole constellation meteor jupiter saturn mars exoplanet gravity "
        "universe cosmos spacecraft light-years redshift quasar satellite solar-system",
        [
            "Why does the {a} appear brighter than the {b} among the stars in the sky?",
            "Explain how astronomers in space science detect a {a} near a {b}.",
            "What telescope do I need to see the {a} and the {b} in the night sky?",
            "How far in space is the {a} from the {b} and the nearest stars?",
            "Could a {a} ever collide with the {b} in space?",
            "What would happen in space to the {a} if the {b} lost its gravity?",
            "When is the best night sky to see the {a} and the {b} among the stars?",
            "How did the {a} form in space among the stars, and what about the {b}?",
        ],
    ),
}


def make_rows(seed: int = 0) -> list[dict[str, str]]:
    """``PROMPTS_PER_TOPIC`` distinct prompts per topic, labelled, in a shuffled order."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for label, (words, shapes) in TOPICS.items():
        seen: set[str] = set()
        while len(seen) < PROMPTS_PER_TOPIC:
            a, b = rng.sample(words.split(), 2)
            text = rng.choice(shapes).format(a=a.replace("-", " "), b=b.replace("-", " "))
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = make_rows()
    out = Path(__file__).resolve().parent.parent / "inventories" / "data" / "local-prompts.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts in {len(TOPICS)} topics to {out}")


if __name__ == "__main__":
    main()
