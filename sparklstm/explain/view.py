"""Show an :class:`~sparklstm.explain.attribution.Explanation`: the text with its tokens coloured by
attribution, in the terminal (rich) or as a standalone HTML page.

Green pushes toward the predicted class, red away from it; the colour's strength is the
attribution's size relative to the largest one in the text. The text is shown as written (after
NFKC normalisation, which the tokenizer applies too), so casing and punctuation stay readable.
"""

from __future__ import annotations

import html
import unicodedata

import numpy as np

from ..text import _TOKEN

GREEN, RED = (22, 163, 74), (220, 38, 38)
FAINT = 0.08  # attributions below this share of the largest are left uncoloured


def segments(expl) -> list[tuple[str, float | None]]:
    """The text cut into ``(piece, strength)``: strength in [-1, 1] for attributed tokens, None
    for the text between tokens and for tokens past ``max_len``.

    Example
    -------
    >>> segments(explain(predictor, "Free money!"))            # doctest: +SKIP
    [('Free', 0.62), (' ', None), ('money', 1.0), ('!', 0.08)]
    """
    a = np.asarray(expl.attributions, dtype=np.float64)
    scale = float(np.abs(a).max()) if len(a) else 0.0
    strength = a / scale if scale > 0 else np.zeros_like(a)
    text = unicodedata.normalize("NFKC", expl.text)
    spans = [m.span() for m in _TOKEN.finditer(text)]
    found = [text[s:e] for s, e in spans[: len(expl.tokens)]]
    if expl.tokens not in (found, [t.lower() for t in found]):
        # Lowercasing moved a token boundary (rare in scripts with special case rules): show the
        # tokens themselves, separated by spaces.
        out: list[tuple[str, float | None]] = []
        for token, s in zip(expl.tokens, strength):
            out += [(token, float(s)), (" ", None)]
        return out[:-1]
    out, pos = [], 0
    for k, (s, e) in enumerate(spans):
        if s > pos:
            out.append((text[pos:s], None))
        out.append((text[s:e], float(strength[k]) if k < len(strength) else None))
        pos = e
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def _mix(strength: float) -> tuple[int, int, int]:
    """White blended toward green (> 0) or red (< 0) by |strength|."""
    r, g, b = GREEN if strength > 0 else RED
    t = 0.25 + 0.75 * abs(strength)  # the faintest coloured token is still visibly tinted
    return tuple(round(255 + (c - 255) * t) for c in (r, g, b))


def summary(expl) -> str:
    """One line: predicted label and probability, method, and the completeness check for IG."""
    line = f"predicted {expl.label!r} (p = {expl.probability:.4f}); "
    if expl.method == "ig":
        delta = expl.score - expl.baseline_score
        line += (f"integrated gradients, {expl.steps} steps: attributions sum to "
                 f"{float(np.sum(expl.attributions)):+.4f}, score - baseline = {delta:+.4f} "
                 f"(completeness error {100 * expl.completeness_error:.2f}%)")
    else:
        line += "occlusion: attribution = score drop when the token is replaced by <unk>"
    return line


def to_rich(expl):
    """A ``rich.text.Text`` of the text with coloured tokens."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    out = Text()
    for piece, s in segments(expl):
        if s is None:
            out.append(piece, style="dim" if piece.strip() and expl.truncated else None)
        elif abs(s) < FAINT:
            out.append(piece)
        else:
            out.append(piece, style=Style(color="black", bgcolor=Color.from_rgb(*_mix(s))))
    return out


def to_html(expl, *, top: int = 10) -> str:
    """A standalone HTML page (inline CSS, no scripts) with the coloured text and the top tokens.

    Example
    -------
    >>> Path("out.html").write_text(to_html(explain(predictor, text)))   # doctest: +SKIP
    """
    spans = []
    for piece, s in segments(expl):
        if s is None:
            text = html.escape(piece)
            spans.append(f'<span class="out">{text}</span>' if piece.strip() else text)
        else:
            color = "transparent" if abs(s) < FAINT else "rgb(%d,%d,%d)" % _mix(s)
            value = s * float(np.abs(expl.attributions).max())
            spans.append(f'<span class="tok" style="background:{color}" title="{value:+.4f}">'
                         f"{html.escape(piece)}</span>")
    rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{a:+.4f}</td></tr>" for t, a in expl.top(top))
    note = (f"<p class=\"note\">Only the first {len(expl.tokens)} tokens reach the model; the "
            f"{expl.truncated} after them (grey) have no attribution.</p>" if expl.truncated else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sparklstm explanation: {html.escape(expl.label)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #111; }}
.text {{ white-space: pre-wrap; border: 1px solid #ddd; border-radius: 6px; padding: 1em; }}
.tok {{ border-radius: 3px; padding: 0 1px; }}
.out {{ color: #999; }}
.note, .legend {{ color: #555; font-size: 90%; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border-bottom: 1px solid #eee; padding: 2px 12px; text-align: left; }}
td:last-child {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>{html.escape(expl.label)} <small>(p = {expl.probability:.4f})</small></h1>
<p>{html.escape(summary(expl))}</p>
<p class="legend"><span class="tok" style="background:rgb{_mix(1.0)}">toward {html.escape(expl.label)}</span>
<span class="tok" style="background:rgb{_mix(-1.0)}">away from it</span>
&mdash; stronger colour, larger attribution (hover for the value)</p>
<div class="text">{"".join(spans)}</div>
{note}
<table><tr><th>token</th><th>attribution</th></tr>{rows}</table>
</body></html>
"""
