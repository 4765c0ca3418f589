"""Shared tokenizer test inputs for tiktoken_llama3.py and spm_train.py.

HARD_STRINGS: hand-written edge cases (emoji, scripts, digits, whitespace,
contractions, code, URLs, punctuation, ...).
wp_chunks(text, n, seed): deterministic pseudo-random chunks of War and Peace
(200..2000 characters, starting anywhere: mid-word, mid-line, at a newline).
"""
import random

HARD_STRINGS = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "Hello world",
    " Hello world",
    "Hello world   ",
    "trailing spaces and tab \t ",
    # emoji: plain, ZWJ sequences, skin tones, flags, keycaps, variation selectors
    "I love 🦙 llamas 🐪!",
    "👨‍👩‍👧‍👦 family, 👩‍💻 coder, 🏳️‍🌈 flag, 🧑🏽‍🚀 astronaut",
    "👍🏻👍🏼👍🏽👍🏾👍🏿 thumbs",
    "🇫🇷🇩🇪🇯🇵🇺🇸 flags 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "1️⃣ 2️⃣ #️⃣ ❤️ ☺︎",
    # CJK, Korean, Arabic, Hindi, Thai, Cyrillic, Greek
    "你好，世界！今天天气很好。",
    "日本語のテキスト、カタカナとひらがな。東京タワー",
    "안녕하세요, 세계! 한국어 문장입니다.",
    "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥",
    "नमस्ते दुनिया, यह हिंदी पाठ है। क्षत्रिय",
    "สวัสดีชาวโลก ภาษาไทย",
    "Привет, мир! Война и мир — Лев Толстой.",
    "Καλημέρα κόσμε, ΑΒΓΔ αβγδ",
    # combining marks and normalisation traps
    "e\u0301 vs \u00e9, n\u0303 vs \u00f1, A\u030a vs \u00c5",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dalgo text",
    "ﬁ ligature, ｆｕｌｌｗｉｄｔｈ, ①②③, ½ ¾",
    # digits: runs of 1..20, mixed with letters and separators
    "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890",
    "12345678901 123456789012 1234567890123 12345678901234 123456789012345",
    "1234567890123456 12345678901234567 123456789012345678 1234567890123456789 12345678901234567890",
    "3.14159 2,718,281 1e-10 0x1F 007 v1.2.3 ２０２４年 ٣٤٥",
    "abc123def4567ghi89",
    # whitespace runs
    "a  b   c    d     e",
    "tab\tseparated\t\tvalues\t\t\t!",
    "line1\nline2\n\nline4\n\n\nline7",
    "mixed \t \n \r\n  \n\t\tend",
    "   leading spaces",
    "\n\n\n",
    "spaces before newline   \n   and after",
    "\r\n\r\nwindows\r\nlines\r\n",
    # contractions
    "'s 'S 'll 'LL n't",
    "I'm, you're, he's, she'll, we'd, they've, don't, CAN'T, I'M, WE'VE",
    "'tis the season o' the year, rock 'n' roll",
    # code
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "func main() {\n\tfor i := 0; i < 10; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n",
    "#include <stdio.h>\nint main(void) {\n  printf(\"%d\\n\", 42);\n  return 0;\n}",
    "const f = async (x) => { await x?.y ?? [1, 2, 3].map(v => v ** 2); };",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son';",
    "<div class=\"a\">&nbsp;&lt;tag&gt;</div>",
    "fn main() -> Result<(), Box<dyn Error>> { println!(\"{:?}\", vec![1u8; 3]); Ok(()) }",
    # URLs, emails, paths
    "https://example.com/path/to/page?query=1&other=two#frag",
    "mailto:someone@example.org, C:\\Users\\me\\file.txt, /usr/local/bin",
    # unicode punctuation
    "“Quoted” ‘single’ — em dash – en dash … ellipsis «guillemets» ¿Qué? ¡Sí!",
    "• bullet · middle dot ‰ ‱ † ‡ § ¶ © ® ™ € £ ¥ ₹ ₿",
    "\u00a0non-breaking\u00a0space\u2009thin\u200bzero-width\u3000ideographic",
    # long word and repetitions
    "Pneumonoultramicroscopicsilicovolcanoconiosis " + "a" * 300,
    "supercalifragilisticexpialidocious" * 8,
    "!!!!!!!!!!?????......,,,,,;;;;",
    "==========----------__________**********",
    # mixed
    "Prince Andrew said: «Ah, mon cher, c'est la guerre!» — and left.",
    "The year 1812: Napoleon's army (≈600,000 men) crossed the Niemen.",
    "ÀÁÂÃÄÅ àáâãäå Ææ Çç ÈÉÊË èéêë ß ẞ ŉ İı",
    "MiXeD CaSe WoRdS and ALLCAPS and lowercase",
]


def wp_chunks(text, n, seed):
    """n deterministic chunks of `text`, 200..2000 characters long."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(200, 2000)
        start = rng.randrange(0, len(text) - length)
        if i % 4 == 1:
            # start just after a newline
            nl = text.find("\n", start)
            if 0 <= nl < len(text) - length - 1:
                start = nl + 1
        elif i % 4 == 2:
            # start on a space (the leading space matters to both tokenizers)
            sp = text.find(" ", start)
            if 0 <= sp < len(text) - length - 1:
                start = sp
        out.append(text[start:start + length])
    return out
