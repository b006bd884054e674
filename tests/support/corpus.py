"""A deterministic TinyStories-shaped corpus: short children's stories, Hub layout.

    python -m tests.support.corpus --stories 300000 --out /tmp/corpus

writes <out>/data/train-0000i-of-0000n.parquet (row groups of 10,000 stories) and
<out>/data/validation-00000-of-00001.parquet (1% of the stories, at least 100), column `text`.
The same --stories and --seed always give byte-identical text. The stories average about 570
characters and 150 gpt2 tokens, as TinyStories does; a few carry the text a real corpus
has: unicode quotes and accents, tabs, digits, blank lines and a literal <|endoftext|>.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam", "Zoe", "Tim", "Chloé", "José"]
ANIMALS = ["cat", "dog", "bird", "bunny", "frog", "bear", "duck", "fox", "owl", "mouse"]
PLACES = ["park", "garden", "forest", "beach", "farm", "pond", "school", "hill", "river"]
THINGS = ["ball", "kite", "box", "hat", "cake", "book", "toy car", "red apple", "blue cup"]
FEELINGS = ["happy", "sad", "scared", "excited", "curious", "tired", "proud", "angry"]
OPENINGS = ["Once upon a time, there was a {feeling} {animal} named {name}.",
            "One day, {name} went to the {place} with a {thing}.",
            "{name} loved to play in the {place} every morning.",
            "There once was a little {animal} who lived near the {place}."]
MIDDLES = ["{name} saw a big {thing} and wanted to play with it.",
           "\"Can I have the {thing}?\" asked {name}. \"Yes, you can!\" said Mom.",
           "The {animal} ran to the {place} and looked for a {thing}.",
           "{name} felt {feeling} because the {thing} was lost.",
           "They shared the {thing} and played until the sun went down.",
           "{name} said, “Thank you, little {animal}!” and smiled.",
           "The {animal} was {feeling}, so {name} gave it a hug.",
           "It was {n} o'clock when they found {n2} shiny stones by the {place}.",
           "\"Don't be {feeling},\" said the {animal}. \"We're friends.\""]
ENDINGS = ["From that day on, {name} and the {animal} were best friends.",
           "The end.", "{name} learned to always share and be kind.",
           "And they all lived happily ever after."]
ODDITIES = ["\tThe {animal} sang:\tla\tla\tla.", "Café crème for {name}, s'il vous plaît.",
            "\n\nThe next day...\n", "<|endoftext|>", "  {name}   waited  .  ", "1, 2, 3, 1000000!"]


def story(rng: random.Random) -> str:
    words = dict(name=rng.choice(NAMES), animal=rng.choice(ANIMALS), place=rng.choice(PLACES),
                 thing=rng.choice(THINGS), feeling=rng.choice(FEELINGS), n=rng.randint(1, 12),
                 n2=rng.randint(2, 99))
    sentences = [rng.choice(OPENINGS)]
    sentences += [rng.choice(MIDDLES) for _ in range(rng.randint(4, 14))]
    if rng.random() < 0.05:
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(ODDITIES))
    sentences.append(rng.choice(ENDINGS))
    paragraphs = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(paragraphs).format(**words)


def write_corpus(out: Path, stories: int, seed: int = 0, files: int | None = None) -> None:
    rng = random.Random(seed)
    n_validation = max(100, stories // 100)
    n_train = stories
    files = files or max(1, n_train // 100_000)
    (out / "data").mkdir(parents=True, exist_ok=True)
    plan = [(f"train-{i:05d}-of-{files:05d}", n_train * (i + 1) // files - n_train * i // files)
            for i in range(files)]
    plan.append(("validation-00000-of-00001", n_validation))
    for name, count in plan:
        table = pa.table({"text": [story(rng) for _ in range(count)]})
        pq.write_table(table, out / "data" / f"{name}.parquet", row_group_size=10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, required=True, help="train stories")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=None, help="train parquet files")
    args = parser.parse_args()
    write_corpus(args.out, args.stories, args.seed, args.files)


if __name__ == "__main__":
    main()
