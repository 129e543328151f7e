#!/usr/bin/env python3
"""Renders a terminal capture with its colours (`tmux capture-pane -e -p`) to a PNG, so
that the README's picture of `muster ui` is the real program's screen, not a drawing.

    tmux capture-pane -e -p -t SESSION > screen.ans
    python3 docs/ui/render.py screen.ans docs/ui/muster-ui.png

Needs Pillow (`pip install pillow`) and the DejaVu Sans Mono font (Debian's
fonts-dejavu-core).
"""

import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 15
FG, BG = (220, 220, 220), (24, 24, 28)
BASIC = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]


def palette(n):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    grey = 8 + (n - 232) * 10
    return (grey, grey, grey)


def cells(text):
    """Each line as a list of (char, fg, bg, bold)."""
    fg, bg, bold, reverse = None, None, False, False
    lines = []
    for raw in text.split("\n"):
        row = []
        for token in re.split(r"(\x1b\[[0-9;]*m)", raw):
            if token.startswith("\x1b["):
                codes = [int(c) if c else 0 for c in token[2:-1].split(";")]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg, bg, bold, reverse = None, None, False, False
                    elif c == 1:
                        bold = True
                    elif c == 22:
                        bold = False
                    elif c == 7:
                        reverse = True
                    elif c == 27:
                        reverse = False
                    elif 30 <= c <= 37:
                        fg = BASIC[c - 30]
                    elif 90 <= c <= 97:
                        fg = BASIC[c - 90 + 8]
                    elif 40 <= c <= 47:
                        bg = BASIC[c - 40]
                    elif 100 <= c <= 107:
                        bg = BASIC[c - 100 + 8]
                    elif c == 39:
                        fg = None
                    elif c == 49:
                        bg = None
                    elif c in (38, 48) and i + 1 < len(codes):
                        if codes[i + 1] == 5 and i + 2 < len(codes):
                            colour = palette(codes[i + 2])
                            i += 2
                        elif codes[i + 1] == 2 and i + 4 < len(codes):
                            colour = tuple(codes[i + 2:i + 5])
                            i += 4
                        else:
                            colour = None
                        if c == 38:
                            fg = colour
                        else:
                            bg = colour
                    i += 1
                continue
            for ch in token:
                f, b = fg or FG, bg or BG
                if reverse:
                    f, b = b, f
                row.append((ch, f, b, bold))
        lines.append(row)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def main(source, target):
    with open(source, encoding="utf-8", errors="replace") as file:
        lines = cells(file.read())
    regular, heavy = ImageFont.truetype(FONT, SIZE), ImageFont.truetype(BOLD, SIZE)
    left, top, right, bottom = regular.getbbox("M")
    width, height = regular.getlength("M"), SIZE + 4
    columns = max(len(row) for row in lines)
    image = Image.new("RGB", (int(columns * width) + 16, len(lines) * height + 16), BG)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(lines):
        for x, (ch, fg, bg, bold) in enumerate(row):
            px, py = 8 + x * width, 8 + y * height
            if bg != BG:
                draw.rectangle([px, py, px + width, py + height], fill=bg)
            if ch != " ":
                draw.text((px, py + 1), ch, font=heavy if bold else regular, fill=fg)
    image.save(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
