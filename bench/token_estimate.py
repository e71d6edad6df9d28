"""How close storyproject.tokens.token_estimate is to a real BPE tokenizer, on known texts.

Claude's current tokenizer is not published. The reference here is the BPE that the
`anthropic-tokenizer` package embeds (65,000 tokens, Claude's earlier published vocabulary), so the
figures show the rule's error against a real Claude-family tokenizer, not against today's models
exactly. It is not a project dependency; run it with:

    pip install --target /tmp/attok anthropic-tokenizer==0.1.0
    PYTHONPATH=/tmp/attok python -m bench.token_estimate
"""

from __future__ import annotations

import json
import statistics

from bench.harness import ROOT
from personas.context import persona_context_text
from storyproject.tokens import token_estimate

SAMPLES = {
    "French prose": "Il était une fois, dans une petite ville au bord de la mer, un vieux pêcheur qui n'avait "
    "jamais vu la neige. Chaque hiver, il espérait; chaque hiver, la pluie revenait. « Ce sera pour "
    "l'année prochaine », disait-il à sa fille, qui ne le croyait plus depuis longtemps.",
    "German prose": "Der alte Fischer wohnte am Rand des Dorfes, wo die Straße aufhörte und die Dünen "
    "begannen. Er sprach wenig, aber wenn er sprach, hörten alle zu. Über seine Vergangenheit wusste "
    "niemand etwas Genaues.",
    "Japanese prose": "京都の古書店を営む詩人。静かで観察力が鋭い。祖父から店を継いだ。雨の日には客が来ない。"
    "それでも彼女は店を開ける。本は読まれるのを待っているからだ。",
    "Russian prose": "Капитан стоял на мостике и смотрел на море. Шторм приближался, но он не отдавал "
    "приказа менять курс. Команда молчала и ждала.",
}


def main() -> None:
    from anthropic_tokenizer import count_tokens

    texts = {f"demo persona {p['name']}": persona_context_text(p["config_data"]) for p in _demo()}
    texts |= SAMPLES
    texts["README.md (English, Markdown)"] = (ROOT / "README.md").read_text("utf-8")
    texts["personas/context.py (code)"] = (ROOT / "personas" / "context.py").read_text("utf-8")
    print("| text | characters | reference BPE | estimate | error |")
    print("|---|---:|---:|---:|---:|")
    errors = []
    for label, text in texts.items():
        real, estimate = count_tokens(text), token_estimate(text)
        errors.append((estimate - real) / real * 100)
        print(f"| {label} | {len(text)} | {real} | {estimate} | {errors[-1]:+.1f}% |")
    print(
        f"\nmean absolute error {statistics.mean(map(abs, errors)):.1f}%, worst {max(errors, key=abs):+.1f}%"
    )


def _demo() -> list[dict]:
    return json.loads((ROOT / "personas" / "demo" / "personas.json").read_text("utf-8"))


if __name__ == "__main__":
    main()
