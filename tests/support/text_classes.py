"""Generated documents per character class, for differential tests of tokenizer engines.

Each class draws "words" from its own alphabet and joins them with its own separators, so the
pre-tokenizer's boundaries (letters / digits / punctuation / whitespace, contractions, a space
before a word, whitespace before a non-space) are hit in every combination. The same class,
seed and count always give the same documents.

    docs = class_documents("ascii_tabs", count=1000, seed=0)
"""
from __future__ import annotations

import random
import string
from typing import Callable

ASCII_WORD = string.ascii_letters + string.digits + string.punctuation
UNICODE_SPACES = ("\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004",
                  "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a", "\u2028",
                  "\u2029", "\u202f", "\u205f", "\u3000", "\u0085", "\x0b", "\x0c", "\x1c",
                  "\x1d", "\x1e", "\x1f", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
CURLY_PUNCT = "‘’“”«»‹›„‚–—…•·′″¡¿§¶†‡"
ACCENTED = "éèêëàâäáãåçñóòôöõøúùûüíìîïýÿæœßÉÈÀÇÑÖÜÅØÆŒłŁđĐšŠžŽčČőűİışğ"
COMBINING = "\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0328\u0331\u0345\u20d7"
CJK = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过"
       "ひらがなカタカナ日本語の文章です한국어문장입니다")
CJK_PUNCT = "。、，！？「」『』（）・～：；"
EMOJI = ("😀", "👍", "👍🏽", "👋🏿", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "✨",
         "🧑🏻‍🚀", "☺︎", "1️⃣", "🙂", "🐱", "🎉")
UNICODE_DIGITS = "٠١٢٣٤٥٦٧٨٩०१२३४५०１２３４５²³¹½¼⅓ⅷ"
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M",
                "'LL", "'D", "’s", "’t", "'", "''", "'x", "'sd", "'lll")
SPECIALS = ("<|endoftext|>", "<|endoftext|", "|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>")


def _word(rng: random.Random, alphabet, low: int = 1, high: int = 8) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _join(rng: random.Random, words: Callable[[], str], separators, n_words=(1, 40)) -> str:
    parts = []
    for _ in range(rng.randint(*n_words)):
        parts.append(words())
        parts.append(rng.choice(separators))
    if rng.random() < 0.5:
        parts.pop()  # half the documents end in whitespace, half in a word
    return "".join(parts)


def _spaces(rng: random.Random, chars: str, longest: int = 3) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, longest)))


def ascii_plain(rng):
    """Printable ASCII words, spaces and newlines: no tab, no CR."""
    return _join(rng, lambda: _word(rng, ASCII_WORD), [" ", " ", " ", "  ", "\n", "\n\n", " \n",
                                                        "\n ", "   "])


def ascii_tabs(rng):
    """Printable ASCII with tabs mixed into the whitespace (tiktoken and tokie disagree)."""
    return _join(rng, lambda: _word(rng, ASCII_WORD), [" ", "\t", " \t", "\t ", "\t\t", "\n\t",
                                                        "\t\n", " \t\t "])


def ascii_whitespace(rng):
    """Runs of tab, vertical tab, form feed, CR, LF and space between ASCII words and
    contractions: every ASCII whitespace, which the fast path takes."""
    return _join(rng, lambda: rng.choice([_word(rng, ASCII_WORD), rng.choice(CONTRACTIONS)]),
                 [_spaces(rng, " \t\x0b\x0c\r\n", longest=4) for _ in range(6)])


def crlf(rng):
    """CR, LF and CRLF line ends, blank lines, trailing spaces."""
    return _join(rng, lambda: _word(rng, string.ascii_letters + ".,!"),
                 [" ", "\r\n", "\r", "\n", "\r\n\r\n", " \r\n", "\n\r", "\r\r\n", " "])


def unicode_whitespace(rng):
    """No-break, em/en/thin/ideographic spaces, line/paragraph separators, zero-widths."""
    return _join(rng, lambda: _word(rng, string.ascii_letters),
                 [" ", "\n"] + [_spaces(rng, " " + "".join(UNICODE_SPACES)) for _ in range(6)])


def curly_quotes(rng):
    """Typographic quotes, dashes and ellipses around words."""
    def word():
        w = _word(rng, string.ascii_letters, 1, 9)
        q = rng.choice(CURLY_PUNCT)
        return rng.choice([q + w, w + q, q + w + q, w + "’s", w + "’ll", "“" + w + "”", w])
    return _join(rng, word, [" ", " ", "\n", ", ", ". "])


def accents(rng):
    """Precomposed accented letters and base letters followed by combining marks."""
    def word():
        chars = []
        for _ in range(rng.randint(1, 9)):
            chars.append(rng.choice(string.ascii_letters + ACCENTED))
            if rng.random() < 0.25:
                chars.append(rng.choice(COMBINING))
        if rng.random() < 0.05:
            chars.insert(0, rng.choice(COMBINING))  # a mark with no base letter
        return "".join(chars)
    return _join(rng, word, [" ", " ", "\n", ", ", " - "])


def cjk(rng):
    """Chinese, Japanese and Korean runs, CJK punctuation, sometimes Latin in between."""
    return _join(rng, lambda: _word(rng, CJK + CJK_PUNCT + "a1", 1, 12),
                 ["", "", " ", "\n", "\u3000"])


def emoji(rng):
    """Emoji with skin-tone modifiers, ZWJ sequences, flags and variation selectors."""
    return _join(rng, lambda: rng.choice([rng.choice(EMOJI), _word(rng, string.ascii_letters)
                                          + rng.choice(EMOJI)]), [" ", "", "\n", "  "])


def digits(rng):
    """Digit runs of any length, separators inside numbers, unicode digits and fractions."""
    def word():
        run = "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 30)))
        return rng.choice([run, f"{run},{run[:3]}", f"{run}.{run[:2]}", f"${run}", f"{run}%",
                           _word(rng, UNICODE_DIGITS, 1, 6), f"x{run}", f"{run}th"])
    return _join(rng, word, [" ", " ", "-", "/", "\n", ", "])


def contractions(rng):
    """Words with straight and curly contractions in either case, and stray apostrophes."""
    def word():
        return _word(rng, string.ascii_letters, 1, 7) + rng.choice(CONTRACTIONS + ("",) * 4)
    return _join(rng, word, [" ", " ", "'", " '", "\n", ", "])


def long_whitespace(rng):
    """Long runs of spaces and newlines (up to hundreds) before, between and after words."""
    def gap():
        return _spaces(rng, rng.choice([" ", "\n", " \n", "  \n\n"]), longest=300)
    return gap() + _join(rng, lambda: _word(rng, string.ascii_letters + "."), [gap() for _ in
                                                                               range(4)] + [" "])


def endoftext(rng):
    """Literal special-token text, which encode_ordinary treats as ordinary text."""
    return _join(rng, lambda: rng.choice(SPECIALS + (_word(rng, string.ascii_letters),) * 3),
                 ["", " ", "\n", "\n\n"])


def random_unicode(rng):
    """Any characters at all: every plane, control characters, private use, unassigned."""
    def char():
        while True:
            cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xFFFF),
                             rng.randint(0x10000, 0x10FFFF)])
            if not 0xD800 <= cp <= 0xDFFF:  # UTF-8 text cannot hold surrogates
                return chr(cp)
    return _join(rng, lambda: "".join(char() for _ in range(rng.randint(1, 6))),
                 [" ", "\n", "", "\t"])


def mixed(rng):
    """Several classes glued together in one document."""
    return "".join(rng.choice(GENERATORS[:-2])(rng)[:200] for _ in range(rng.randint(2, 5)))


GENERATORS = [ascii_plain, ascii_tabs, ascii_whitespace, crlf, unicode_whitespace, curly_quotes, accents, cjk,
              emoji, digits, contractions, long_whitespace, endoftext, random_unicode, mixed]
CLASSES = {g.__name__: g for g in GENERATORS}


def class_documents(name: str, count: int, seed: int = 0) -> list[str]:
    """`count` documents of class `name`; the same arguments always give the same documents."""
    rng = random.Random(f"{name}/{seed}")
    generate = CLASSES[name]
    return [generate(rng) for _ in range(count)]


# The special-token text of the tokenizers tokbin reads (Llama 3, GPT-2, SentencePiece, Mistral
# instruct): inside a document, every kind must encode it as ordinary text.
LITERAL_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>",
                    "<|start_header_id|>", "<|reserved_special_token_5|>", "<s>", "</s>",
                    "<unk>", "[INST]", "[/INST]", "<pad>", "[REF]")
HOSTILE_CLASSES = ("ascii_tabs", "crlf", "unicode_whitespace", "accents", "emoji", "cjk",
                   "endoftext", "random_unicode", "long_whitespace")


def hostile_documents(per_class: int = 12, seed: int = 0) -> list[str]:
    """Tabs, CR, unicode whitespace, emoji, combining marks, any code point, and literal special
    tokens alone, doubled, glued to words and at a document's edges."""
    specials = [form.format(s=s) for s in LITERAL_SPECIALS
                for form in ("{s}", "{s}{s}", "a{s}b", " {s} ", "\n{s}\n", "x {s}")]
    fixed = ["", " ", "\t", "\r", "\r\n", "\n\n", "a\tb\r\nc\rd",
             "\u00a0\u3000\u2028\u2029\u0085", "\u180e\u200b\ufeff",
             "cafe\u0301 Z\u0324\u0354\u0367 n\u0303", "👩‍👩‍👧‍👦 🇺🇸 👍🏽",
             "\x00\x1b\x7f", "\ue000\U0010ffff", "1234567890" * 5, "I'm you'RE it's"]
    return fixed + specials + [doc for name in HOSTILE_CLASSES
                               for doc in class_documents(name, per_class, seed)]
