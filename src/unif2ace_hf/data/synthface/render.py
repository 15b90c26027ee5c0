"""The SynthFace renderer: draws a stylised, anti-aliased face from an attribute set with PIL.

Geometry is written in unit coordinates (0..1 of the image side) and drawn on a canvas `supersample` times
larger, then box-reduced: that gives anti-aliasing at the cost of one cheap `Image.reduce`. The seed only
moves nuisance factors (a few percent of position, scale and colour, stray strands, freckle positions), kept
well below the differences between values, so a label is never ambiguous.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from PIL import Image, ImageDraw

from .taxonomy import validate_attributes

Color = tuple[int, int, int]

HAIR_COLORS: dict[str, Color] = {
    "black": (28, 24, 24),
    "brown": (105, 62, 30),
    "blond": (226, 192, 100),
    "red": (190, 62, 24),
    "gray": (135, 135, 138),
    "white": (238, 238, 232),
    "blue": (40, 90, 215),
    "pink": (240, 120, 190),
}
SKIN_TONES: dict[str, Color] = {
    "pale": (252, 226, 208),
    "light": (236, 196, 160),
    "tan": (206, 156, 112),
    "brown": (150, 98, 62),
    "dark": (88, 56, 38),
}
EYE_COLORS: dict[str, Color] = {
    "brown": (110, 60, 25),
    "blue": (40, 120, 230),
    "green": (40, 160, 60),
    "gray": (150, 160, 170),
}
LIPSTICK: dict[str, Color] = {"red": (200, 20, 40), "pink": (240, 100, 170), "plum": (100, 25, 75)}
BACKGROUNDS: dict[str, Color] = {
    "white": (246, 246, 246),
    "gray": (150, 150, 150),
    "blue": (120, 170, 235),
    "green": (130, 205, 140),
    "yellow": (245, 220, 90),
    "purple": (165, 120, 210),
}
# Nuisance palettes: clothing and hats vary with the seed, never with the labels.
_SHIRTS: tuple[Color, ...] = ((40, 50, 90), (110, 30, 40), (35, 80, 55), (60, 60, 64), (20, 110, 120), (120, 80, 40))
_HATS: tuple[Color, ...] = ((170, 30, 35), (30, 45, 110), (90, 100, 40), (90, 55, 30), (25, 25, 28), (20, 120, 120))
_GOLD: Color = (212, 170, 40)
_LINE: Color = (45, 30, 28)

# Face half-width, half-height and outline style per shape (unit coordinates).
_FACE: dict[str, tuple[float, float]] = {
    "oval": (0.195, 0.255),
    "round": (0.228, 0.240),
    "square": (0.215, 0.250),
    "heart": (0.218, 0.255),
    "long": (0.168, 0.278),
}


def _mix(a: Color, b: Color, t: float) -> Color:
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def _scale(c: Color, f: float) -> Color:
    return (min(255, int(c[0] * f)), min(255, int(c[1] * f)), min(255, int(c[2] * f)))


class _Canvas:
    """Unit-coordinate drawing helpers on a supersampled PIL canvas."""

    def __init__(self, side: int, background: Color, ox: float, oy: float, k: float):
        self.side = side
        self.image = Image.new("RGB", (side, side), background)
        self.draw = ImageDraw.Draw(self.image)
        self.ox, self.oy, self.k = ox, oy, k

    def pt(self, x: float, y: float) -> tuple[float, float]:
        # Face-centred coordinates -> pixels: (0, 0) is the face centre, units of the image side.
        return ((self.ox + x * self.k) * self.side, (self.oy + y * self.k) * self.side)

    def w(self, width: float) -> int:
        return max(1, round(width * self.k * self.side))

    def poly(self, points, fill=None, outline=None, width: float = 0.0):
        xy = [self.pt(x, y) for x, y in points]
        self.draw.polygon(xy, fill=fill, outline=outline, width=self.w(width) if outline is not None else 0)

    def line(self, points, fill, width: float):
        self.draw.line([self.pt(x, y) for x, y in points], fill=fill, width=self.w(width), joint="curve")

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill=None, outline=None, width: float = 0.0):
        x0, y0 = self.pt(x - rx, y - ry)
        x1, y1 = self.pt(x + rx, y + ry)
        self.draw.ellipse(
            (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)),
            fill=fill,
            outline=outline,
            width=self.w(width) if outline else 1,
        )

    def arc_points(self, x, y, rx, ry, start, end, n=10):
        """Points on an ellipse from angle `start` to `end` (radians, 0 = right, pi/2 = down)."""
        return [
            (
                x + rx * math.cos(start + (end - start) * i / (n - 1)),
                y + ry * math.sin(start + (end - start) * i / (n - 1)),
            )
            for i in range(n)
        ]


def _face_outline(shape: str, a: float, b: float, n: int = 32) -> list[tuple[float, float]]:
    points = []
    for i in range(n):
        t = 2 * math.pi * i / n  # 0 = top, clockwise
        s, c = math.sin(t), -math.cos(t)
        if shape == "square":
            e = 0.38 if c > 0 else 0.75  # flatter (boxier) jaw
            x = a * math.copysign(abs(s) ** e, s)
            y = b * math.copysign(abs(c) ** e, c)
        else:
            x, y = a * s, b * c
        if y > 0:
            u = y / b
            if shape == "heart":
                x *= 1.0 - 0.55 * u**1.4
            elif shape in ("oval", "long"):
                x *= 1.0 - 0.18 * u * u
        elif shape == "heart":
            x *= 1.04
        points.append((x, y))
    return points


def _lower_face(outline, y_from: float, grow: float = 1.0, drop: float = 0.0):
    """The part of the face outline below `y_from`, scaled outwards by `grow` and stretched down by `drop`."""
    part = [(x * grow, y + drop * max(0.0, y) / 0.25) for x, y in outline if y > y_from]
    return sorted(part, key=lambda p: math.atan2(p[0], -p[1]) if p[0] >= 0 else math.atan2(p[0], -p[1]) + 2 * math.pi)


def render(attributes: Mapping[str, str], size: int = 64, seed: int = 0, supersample: int | None = None) -> Image.Image:
    """Draw the face described by `attributes` as an RGB image of `size`×`size` pixels.

    Deterministic: the same attributes, size and seed give the same pixels. `supersample` is the
    anti-aliasing factor (default: enough for a 128-pixel canvas, at least 2).
    """
    validate_attributes(attributes)
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 4096:
        raise ValueError(f"`size` must be an integer between 16 and 4096, got {size!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}.")
    ss = supersample if supersample is not None else max(2, math.ceil(128 / size))
    if not isinstance(ss, int) or ss < 1:
        raise ValueError(f"`supersample` must be a positive int, got {supersample!r}.")
    # All nuisance draws happen here, in a fixed order, so that with the same seed two attribute sets that
    # differ in one category give renders that differ only where that category is drawn.
    rng = random.Random(seed)
    offsets = {
        name: [rng.randint(-amount, amount) for _ in range(3)]
        for name, amount in (("bg", 6), ("skin", 5), ("hair", 6), ("iris", 6))
    }
    placement = (0.5 + rng.uniform(-0.012, 0.012), 0.52 + rng.uniform(-0.01, 0.01), 1.2 * rng.uniform(0.975, 1.025))
    shirt, hat_color = rng.choice(_SHIRTS), rng.choice(_HATS)
    curls = [(rng.uniform(math.pi * 1.05, math.pi * 1.95), rng.uniform(0.75, 0.95)) for _ in range(22)]
    strand_tilt = [rng.uniform(-0.004, 0.004) for _ in range(4)]
    freckle_spots = [(rng.choice((-1, 1)), rng.uniform(0.04, 0.14), rng.uniform(0.035, 0.07)) for _ in range(16)]

    def jit(c: Color, name: str) -> Color:
        return tuple(min(255, max(0, v + o)) for v, o in zip(c, offsets[name]))  # type: ignore[return-value]

    a_ = attributes
    age = a_["age"]
    child = age == "child"
    cv = _Canvas(size * ss, jit(BACKGROUNDS[a_["background"]], "bg"), *placement)
    skin = jit(SKIN_TONES[a_["skin_tone"]], "skin")
    skin_line = _scale(skin, 0.62)
    hair = jit(HAIR_COLORS[a_["hair_color"]], "hair")
    hair_dark = _scale(hair, 0.72)
    facial_hair = _mix(hair, (20, 15, 15), 0.3)
    fa, fb = _FACE[a_["face_shape"]]
    if child:
        fa, fb = fa * 0.97, fb * 0.93
    outline = _face_outline(a_["face_shape"], fa, fb)
    top = -fb
    brow_y, eye_y, eye_dx = (-0.052, 0.0, 0.082) if child else (-0.095, -0.035, 0.085)
    mouth_y = 0.125 if child else 0.14
    mouth_w = 0.045 if child else 0.06

    # Shirt and shoulders (colour is a nuisance factor).
    cv.poly([(-0.42, 0.55), (-0.30, 0.32), (0.30, 0.32), (0.42, 0.55)], fill=shirt)
    cv.ellipse(0.0, 0.36, 0.31, 0.07, fill=shirt)

    # Hair volume behind the head.
    bald = a_["bald"] == "yes"
    length, texture = a_["hair_length"], a_["hair_texture"]
    if bald:
        for side in (-1, 1):
            cv.ellipse(side * (fa + 0.004), -0.03, 0.035, 0.07, fill=hair, outline=hair_dark, width=0.004)
    else:
        extra = {"straight": 0.0, "wavy": 0.01, "curly": 0.02, "coily": 0.05}[texture]
        if length == "buzz cut":
            hw, dome, bottom = fa + 0.012, fb + 0.02, -0.06
        else:
            hw = fa + 0.04 + extra
            dome = fb + 0.065 + extra
            bottom = {"short": -0.02, "chin-length": fb * 0.75, "shoulder-length": fb + 0.12, "long": 0.55}[length]
            if length != "short":
                hw += 0.03
        pts = cv.arc_points(0.0, 0.0, hw, dome, math.pi, 2 * math.pi, n=16)
        if bottom > 0:
            flare = 0.03 if length == "long" else 0.015
            pts = [(-hw - flare, bottom)] + pts + [(hw + flare, bottom)]
        else:
            pts = [(-hw, bottom)] + pts + [(hw, bottom)]
        if texture == "wavy":
            wavy = []
            for i in range(len(pts) - 1):
                (x0, y0), (x1, y1) = pts[i], pts[i + 1]
                for j in range(3):
                    t = j / 3
                    nx, ny = y1 - y0, x0 - x1
                    norm = math.hypot(nx, ny) or 1.0
                    off = 0.011 * math.sin((i * 3 + j) * 2.1)
                    wavy.append((x0 + (x1 - x0) * t + off * nx / norm, y0 + (y1 - y0) * t + off * ny / norm))
            wavy.append(pts[-1])
            pts = wavy
        cv.poly(pts, fill=hair, outline=hair_dark, width=0.005)
        if texture in ("curly", "coily"):
            r = 0.024 if texture == "curly" else 0.017
            step = 2 if texture == "curly" else 1
            for x, y in pts[1:-1:step]:
                cv.ellipse(x, y, r, r, fill=hair, outline=hair_dark, width=0.004)
            dots = 22 if texture == "coily" else 10
            for ang, rad in curls[:dots]:
                x, y = hw * rad * math.cos(ang), dome * rad * math.sin(ang)
                rr = 0.008 if texture == "coily" else 0.012
                cv.ellipse(x, y, rr, rr, outline=hair_dark, width=0.004)
        elif length != "buzz cut":
            for s_i, side in enumerate((-1, 1)):
                for j in range(2):
                    x = side * (hw - 0.02 - 0.018 * j)
                    y_end = max(bottom - 0.03, 0.02)
                    if texture == "wavy":
                        strand = [(x + 0.008 * math.sin(q * 1.7), -0.12 + (y_end + 0.12) * q / 6) for q in range(7)]
                    else:
                        strand = [(x, -0.12), (x + strand_tilt[2 * s_i + j], y_end)]
                    cv.line(strand, hair_dark, 0.004)

    # Neck, neckline and necklace.
    neck = _scale(skin, 0.92)
    cv.poly([(-0.075, fb - 0.08), (0.075, fb - 0.08), (0.075, 0.33), (-0.075, 0.33)], fill=neck)
    cv.ellipse(0.0, 0.315, 0.11, 0.06, fill=neck)
    necklace = a_["necklace"]
    if necklace != "none":
        chain = cv.arc_points(0.0, 0.285, 0.082, 0.055, 0.15 * math.pi, 0.85 * math.pi, n=9)
        if necklace == "pearls":
            for x, y in chain:
                cv.ellipse(x, y, 0.011, 0.011, fill=(250, 250, 245), outline=(150, 150, 150), width=0.003)
        else:
            cv.line(chain, _GOLD, 0.007)
            if necklace == "pendant":
                cv.poly(
                    [(0.0, 0.335), (0.022, 0.362), (0.0, 0.39), (-0.022, 0.362)],
                    fill=(190, 30, 60),
                    outline=_GOLD,
                    width=0.005,
                )

    # Ears.
    for side in (-1, 1):
        ex = side * (fa * (0.99 if a_["face_shape"] != "heart" else 1.02))
        cv.ellipse(ex, eye_y + 0.03, 0.028, 0.048, fill=skin, outline=skin_line, width=0.004)

    # Face.
    cv.poly(outline, fill=skin, outline=_scale(skin, 0.7), width=0.006)

    # Skin details.
    if a_["stubble"] == "yes":
        stub = _lower_face(outline, 0.055, 0.98)
        cv.poly([(-fa * 0.85, 0.055)] + stub + [(fa * 0.85, 0.055)], fill=_mix(skin, facial_hair, 0.35))
        cv.ellipse(0.0, 0.105, 0.06, 0.018, fill=_mix(skin, facial_hair, 0.35))
    if a_["blush"] == "yes":
        for side in (-1, 1):
            cv.ellipse(side * 0.105, eye_y + 0.062, 0.042, 0.024, fill=_mix(skin, (240, 70, 100), 0.55))
    if a_["freckles"] == "yes":
        fr = _mix(skin, (120, 60, 25), 0.55)
        for side, x, y in freckle_spots:
            cv.ellipse(side * x, eye_y + y, 0.0065, 0.0065, fill=fr)
    moles = a_["moles"]
    if moles == "cheek":
        cv.ellipse(0.118, eye_y + 0.055, 0.012, 0.012, fill=(55, 30, 22))
    elif moles == "above lip":
        cv.ellipse(-0.088, mouth_y - 0.02, 0.012, 0.012, fill=(55, 30, 22))
    wr = a_["wrinkles"]
    wrinkle = _scale(skin, 0.7)
    if wr in ("forehead", "forehead and crow's feet"):
        for dy in (-0.13, -0.112):
            cv.line(cv.arc_points(0.0, dy + 0.08, 0.075, 0.08, 1.3 * math.pi, 1.7 * math.pi, n=6), wrinkle, 0.0055)
    if wr in ("crow's feet", "forehead and crow's feet"):
        for side in (-1, 1):
            x0 = side * (eye_dx + 0.053)
            for dy in (-0.02, -0.008, 0.004):
                cv.line([(x0, eye_y + dy * 0.5), (x0 + side * 0.028, eye_y + dy * 1.6)], wrinkle, 0.005)
    # Age: under-eye lines (middle-aged: one, elderly: two) sit where beards and masks never reach;
    # nasolabial folds and, for the elderly, marionette lines add to them.
    age_line = _scale(skin, 0.62)
    if age in ("middle-aged", "elderly"):
        for side in (-1, 1):
            cv.line(
                cv.arc_points(side * eye_dx, eye_y + 0.028, 0.032, 0.016, 0.15 * math.pi, 0.85 * math.pi, n=6),
                age_line,
                0.006,
            )
            cv.line([(side * 0.05, 0.07), (side * 0.075, 0.11), (side * 0.08, mouth_y + 0.01)], age_line, 0.006)
    if age == "elderly":
        for side in (-1, 1):
            cv.line(
                cv.arc_points(side * eye_dx, eye_y + 0.042, 0.036, 0.018, 0.15 * math.pi, 0.85 * math.pi, n=6),
                age_line,
                0.006,
            )
            cv.line([(side * 0.07, mouth_y + 0.02), (side * 0.085, mouth_y + 0.075)], age_line, 0.006)

    # Beard (drawn under the mouth).
    beard = a_["beard"]
    if beard == "goatee":
        cv.poly(
            [
                (-0.04, mouth_y + 0.015),
                (0.04, mouth_y + 0.015),
                (0.035, fb - 0.02),
                (0.0, fb + 0.02),
                (-0.035, fb - 0.02),
            ],
            fill=facial_hair,
        )
    elif beard in ("short", "full"):
        grow, drop = (1.02, 0.0) if beard == "short" else (1.07, 0.075)
        low = _lower_face(outline, 0.03, grow, drop)
        cv.poly(
            [(-fa * grow * 0.95, 0.03)] + low + [(fa * grow * 0.95, 0.03)],
            fill=facial_hair,
            outline=_scale(facial_hair, 0.8),
            width=0.004,
        )
        # The beard leaves the mouth and upper lip bare, so a moustache is a separate, visible choice.
        cv.ellipse(0.0, mouth_y - 0.012, mouth_w + 0.015, 0.045, fill=skin)

    # Nose.
    nose = a_["nose"]
    nk = 0.8 if child else 1.0
    ny0, ny1 = eye_y + 0.02, eye_y + 0.02 + 0.095 * nk
    if nose == "button":
        cv.line(cv.arc_points(0.0, ny1 - 0.012, 0.022, 0.014, 0.1 * math.pi, 0.9 * math.pi, n=6), skin_line, 0.006)
        for side in (-1, 1):
            cv.ellipse(side * 0.014, ny1 - 0.004, 0.006, 0.005, fill=skin_line)
    elif nose == "straight":
        cv.line([(0.012, ny0), (0.014, ny1 - 0.01)], skin_line, 0.006)
        cv.line(cv.arc_points(0.0, ny1 - 0.008, 0.03, 0.012, 0.05 * math.pi, 0.95 * math.pi, n=7), skin_line, 0.006)
    elif nose == "wide":
        cv.line([(0.01, ny0 + 0.03), (0.012, ny1 - 0.02)], skin_line, 0.005)
        cv.line(cv.arc_points(0.0, ny1 - 0.014, 0.052, 0.02, 0.0, math.pi, n=9), skin_line, 0.007)
        for side in (-1, 1):
            cv.ellipse(side * 0.024, ny1 - 0.004, 0.012, 0.007, fill=skin_line)
    else:  # hooked
        cv.line([(0.008, ny0), (0.03, ny0 + 0.04), (0.03, ny1 - 0.01), (0.012, ny1 + 0.008)], skin_line, 0.007)
        cv.line([(-0.025, ny1 - 0.005), (0.012, ny1 + 0.008)], skin_line, 0.006)

    # Mouth: the action draws its shape, the emotion bends a closed mouth, `lips` sets thickness.
    lip_color = LIPSTICK.get(a_["lipstick"]) or _mix(skin, (165, 55, 65), 0.55)
    lt = {"thin": 0.005, "medium": 0.014, "full": 0.026}[a_["lips"]] * (0.85 if child else 1.0)
    action, emotion = a_["action"], a_["emotion"]
    mw, my = mouth_w, mouth_y
    if action in ("smiling", "none", "glaring"):
        bend = {"smiling": -0.03, "none": 0.0, "glaring": 0.0}[action]
        if action == "none":
            bend = {"sad": 0.022, "surprised": 0.0}.get(emotion, 0.0)
            if emotion == "surprised":
                mw *= 0.6
        # A closed mouth: the lip line is a parabola; upper and lower lips around it.
        line_pts = [(mw * u, my + bend * (u * u)) for u in (-1, -0.5, 0, 0.5, 1)]
        upper = [(x, y - lt * (1 - (x / mw) ** 2) - 0.002) for x, y in line_pts]
        lower = [(x, y + lt * 1.2 * (1 - (x / mw) ** 2) + 0.002) for x, y in line_pts]
        cv.poly(upper + line_pts[::-1], fill=lip_color)
        cv.poly(line_pts + lower[::-1], fill=lip_color)
        cv.line(line_pts, _scale(lip_color, 0.5), 0.0045)
    elif action == "laughing":
        w, h = mw * 1.05, 0.055
        cv.poly(
            [(-w - lt, my - 0.012 - lt)]
            + cv.arc_points(0.0, my - 0.012, w + lt, h + lt * 1.3, 0.0, math.pi, 9)[::-1]
            + [(w + lt, my - 0.012 - lt)],
            fill=lip_color,
        )
        cv.poly(
            [(-w, my - 0.012)] + cv.arc_points(0.0, my - 0.012, w, h, 0.0, math.pi, 9)[::-1] + [(w, my - 0.012)],
            fill=(70, 20, 25),
        )
        cv.poly(
            [(-w * 0.9, my - 0.012), (w * 0.9, my - 0.012), (w * 0.8, my + 0.005), (-w * 0.8, my + 0.005)],
            fill=(250, 250, 245),
        )
    else:  # mouth open
        cv.ellipse(0.0, my + 0.005, 0.028 + lt, 0.038 + lt, fill=lip_color)
        cv.ellipse(0.0, my + 0.005, 0.026, 0.036, fill=(70, 20, 25))

    # Moustache (over the upper lip).
    moustache = a_["moustache"]
    mty = my - lt - (0.013 if action != "laughing" else 0.025)
    if moustache == "pencil":
        cv.line([(-0.052, mty + 0.006), (0.0, mty), (0.052, mty + 0.006)], facial_hair, 0.008)
    elif moustache == "chevron":
        cv.poly(
            [
                (-0.065, mty + 0.013),
                (-0.045, mty - 0.013),
                (0.045, mty - 0.013),
                (0.065, mty + 0.013),
                (0.0, mty + 0.006),
            ],
            fill=facial_hair,
        )
    elif moustache == "handlebar":
        for side in (-1, 1):
            cv.line(
                [
                    (0.0, mty - 0.004),
                    (side * 0.06, mty + 0.004),
                    (side * 0.09, mty - 0.012),
                    (side * 0.085, mty - 0.035),
                ],
                facial_hair,
                0.011,
            )

    # Eyes.
    eyes_state = a_["eyes"]
    ew, eh = (0.05, 0.03) if child else (0.045, 0.024)
    if emotion == "surprised":
        eh *= 1.45
    iris = jit(EYE_COLORS[a_["eye_color"]], "iris")
    for side in (-1, 1):
        ex = side * eye_dx
        if eyes_state == "closed":
            cv.line(cv.arc_points(ex, eye_y - 0.006, ew, eh * 0.8, 0.1 * math.pi, 0.9 * math.pi, n=7), _LINE, 0.007)
            continue
        cv.ellipse(ex, eye_y, ew, eh, fill=(250, 250, 248))
        ir = 0.021 if not child else 0.024
        cv.ellipse(ex, eye_y, ir, min(ir, eh), fill=iris)
        cv.ellipse(ex, eye_y, 0.008, 0.008, fill=(15, 10, 10))
        if action == "glaring":
            cv.poly(
                [
                    (ex - ew - 0.006, eye_y - eh - 0.01),
                    (ex + ew + 0.006, eye_y - eh - 0.01),
                    (ex + ew + 0.006, eye_y - 0.002),
                    (ex - ew - 0.006, eye_y - 0.002),
                ],
                fill=skin,
            )
            cv.line([(ex - ew, eye_y - 0.002), (ex + ew, eye_y - 0.002)], _LINE, 0.008)
        else:
            cv.line(cv.arc_points(ex, eye_y, ew, eh, 1.0 * math.pi, 2.0 * math.pi, n=9), _LINE, 0.006)
        if emotion == "happy" and action != "glaring":
            # Raised cheeks push up the lower lid: a smile shows in the eyes too.
            lid = cv.arc_points(ex, eye_y + eh * 1.1, ew * 1.05, eh * 0.75, 1.0 * math.pi, 2.0 * math.pi, n=8)
            cv.poly(lid + [(ex + ew * 1.05, eye_y + eh * 1.3), (ex - ew * 1.05, eye_y + eh * 1.3)], fill=skin)
            cv.line(lid, _LINE, 0.005)

    # Eyebrows: the shape is the category, the emotion lifts or tilts the whole brow.
    thick = {"thin": 0.009, "medium": 0.017, "thick": 0.029}[a_["eyebrow_thickness"]]
    shape = a_["eyebrow_shape"]
    brow_color = _mix(hair, (20, 15, 15), 0.45) if not bald else _mix(hair, (20, 15, 15), 0.55)
    lift = {"surprised": 0.024}.get(emotion, 0.0)
    inner = {"angry": 0.025, "sad": -0.025}.get(emotion, 0.0)  # + lowers the inner end
    for side in (-1, 1):
        pts = []
        for i in range(7):
            u = i / 6  # 0 inner -> 1 outer
            if shape == "straight":
                h = 0.0
            elif shape == "arched":
                h = 0.03 * (u / 0.65 if u < 0.65 else (1 - u) / 0.35)
            else:
                h = 0.022 * math.sin(math.pi * u)
            y = brow_y - h - lift + inner * (1 - u) + (0.004 if shape == "arched" else 0.0)
            pts.append((side * (0.035 + 0.1 * u), y))
        cv.line(pts, brow_color, thick)

    # Hair in front: the hairline edge, then bangs.
    if not bald:
        hairline = a_["hairline"]
        hl = top + (0.045 if length != "buzz cut" else 0.04)
        xs = [-fa - 0.02 + (2 * fa + 0.04) * i / 8 for i in range(9)]
        edge = []
        for x in xs:
            u = x / (fa + 0.02)  # -1..1
            if hairline == "straight":
                y = hl + 0.04
            elif hairline == "rounded":
                y = hl + 0.015 + 0.07 * u * u
            elif hairline == "widow's peak":
                y = hl + 0.03 + 0.05 * max(0.0, 1 - abs(u) * 3.0)
            else:  # receding: temples pushed back
                y = hl + 0.045 - 0.06 * math.exp(-((abs(u) - 0.62) ** 2) / 0.03)
            edge.append((x, y))
        front_color = hair if length != "buzz cut" else _mix(hair, skin, 0.25)
        # Close the region along the top of the skull, never crossing the hairline edge.
        ra, rb = fa + 0.025, fb + (0.03 if length != "buzz cut" else 0.015)
        crown = [(x, min(-rb * math.sqrt(max(0.0, 1 - (x / ra) ** 2)), y - 0.002)) for x, y in reversed(edge)]
        cv.poly(edge + crown, fill=front_color)
        bangs = a_["bangs"]
        bl = brow_y - 0.045 - lift
        if bangs == "blunt":
            cv.poly(
                [
                    (-fa * 0.7, top - 0.015),
                    (fa * 0.7, top - 0.015),
                    (fa + 0.012, top + 0.06),
                    (fa + 0.0, bl),
                    (-fa - 0.0, bl),
                    (-fa - 0.012, top + 0.06),
                ],
                fill=hair,
                outline=hair_dark,
                width=0.004,
            )
            for x in (-0.09, -0.03, 0.03, 0.09):
                cv.line([(x, top + 0.05), (x, bl - 0.005)], hair_dark, 0.004)
        elif bangs == "side-swept":
            cv.poly(
                [
                    (-fa * 0.7, top - 0.015),
                    (fa * 0.7, top - 0.015),
                    (fa + 0.015, top + 0.06),
                    (fa + 0.01, bl + 0.01),
                    (0.05, top + 0.12),
                    (-fa - 0.01, top + 0.08),
                    (-fa - 0.012, top + 0.05),
                ],
                fill=hair,
                outline=hair_dark,
                width=0.004,
            )
        elif bangs == "curtain":
            for side in (-1, 1):
                cv.poly(
                    [
                        (0.0, top - 0.015),
                        (side * fa * 0.7, top - 0.015),
                        (side * (fa + 0.015), top + 0.06),
                        (side * (fa + 0.01), bl + 0.025),
                        (side * 0.08, top + 0.10),
                        (side * 0.012, top + 0.05),
                    ],
                    fill=hair,
                    outline=hair_dark,
                    width=0.004,
                )

    # Sideburns.
    sb = a_["sideburns"]
    if sb != "none":
        y_end = eye_y + (0.055 if sb == "short" else 0.11)
        for side in (-1, 1):
            x_out = side * (fa - 0.005)
            cv.poly(
                [
                    (x_out, eye_y + 0.012),
                    (x_out - side * 0.03, eye_y + 0.012),
                    (x_out - side * 0.028, y_end),
                    (x_out - side * 0.005, y_end),
                ],
                fill=facial_hair,
            )

    # Earrings.
    ear = a_["earrings"]
    if ear != "none":
        for side in (-1, 1):
            lx, ly = side * (fa * (0.99 if a_["face_shape"] != "heart" else 1.02) + 0.01), eye_y + 0.075
            if ear == "studs":
                cv.ellipse(lx, ly, 0.014, 0.014, fill=_GOLD, outline=(60, 40, 10), width=0.004)
            elif ear == "hoops":
                cv.ellipse(lx + side * 0.004, ly + 0.026, 0.024, 0.028, outline=(60, 40, 10), width=0.011)
                cv.ellipse(lx + side * 0.004, ly + 0.026, 0.021, 0.025, outline=_GOLD, width=0.006)
            else:
                cv.line([(lx, ly), (lx, ly + 0.045)], (60, 40, 10), 0.006)
                cv.ellipse(lx, ly + 0.058, 0.014, 0.018, fill=(60, 160, 200), outline=(20, 50, 80), width=0.004)

    # Glasses.
    glasses = a_["glasses"]
    if glasses != "none":
        frame = (30, 25, 25)
        for side in (-1, 1):
            ex = side * eye_dx
            if glasses == "round":
                cv.ellipse(ex, eye_y, 0.047, 0.047, outline=frame, width=0.008)
            elif glasses == "rectangular":
                cv.poly(
                    [
                        (ex - 0.058, eye_y - 0.036),
                        (ex + 0.058, eye_y - 0.036),
                        (ex + 0.058, eye_y + 0.034),
                        (ex - 0.058, eye_y + 0.034),
                    ],
                    outline=frame,
                    width=0.008,
                )
            elif glasses == "half-rim":
                cv.line([(ex - 0.058, eye_y - 0.03), (ex + 0.058, eye_y - 0.03)], frame, 0.016)
                cv.line(
                    cv.arc_points(ex, eye_y - 0.03, 0.056, 0.06, 0.05 * math.pi, 0.95 * math.pi, 8),
                    (120, 120, 125),
                    0.003,
                )
            else:  # sunglasses
                cv.poly(
                    [
                        (ex - 0.06, eye_y - 0.035),
                        (ex + 0.06, eye_y - 0.035),
                        (ex + 0.05, eye_y + 0.04),
                        (ex - 0.05, eye_y + 0.04),
                    ],
                    fill=(20, 20, 28),
                    outline=frame,
                    width=0.006,
                )
            cv.line([(side * (eye_dx + 0.05), eye_y - 0.032), (side * (fa + 0.005), eye_y - 0.034)], frame, 0.006)
        cv.line([(-eye_dx + 0.045, eye_y - 0.012), (0.0, eye_y - 0.02), (eye_dx - 0.045, eye_y - 0.012)], frame, 0.007)

    # Face mask (over the lower face).
    mask = a_["face_mask"]
    if mask != "none":
        color = (150, 200, 232) if mask == "surgical" else (32, 32, 38)
        low = _lower_face(outline, 0.03, 1.02, 0.01)
        pts = [(-fa * 0.98, 0.03), (-0.04, eye_y + 0.05), (0.04, eye_y + 0.05), (fa * 0.98, 0.03)] + low
        cv.poly(pts, fill=color, outline=_scale(color, 0.7), width=0.004)
        if mask == "surgical":
            for dy in (0.07, 0.11, 0.15):
                cv.line([(-fa * 0.8, dy), (fa * 0.8, dy)], _scale(color, 0.78), 0.005)
        for side in (-1, 1):
            cv.line(
                [(side * fa * 0.98, 0.035), (side * (fa + 0.01), eye_y + 0.01)],
                (235, 235, 235) if mask == "surgical" else (32, 32, 38),
                0.005,
            )

    # Hat (sits on the crown, above the hairline).
    hat = a_["hat"]
    if hat != "none":
        hc = hat_color
        base = top - 0.005
        if hat == "beanie":
            cv.poly(
                cv.arc_points(0.0, base, fa + 0.05, 0.14, math.pi, 2 * math.pi, 14),
                fill=hc,
                outline=_scale(hc, 0.6),
                width=0.005,
            )
            cv.poly(
                [
                    (-fa - 0.055, base - 0.04),
                    (fa + 0.055, base - 0.04),
                    (fa + 0.055, base + 0.004),
                    (-fa - 0.055, base + 0.004),
                ],
                fill=_scale(hc, 0.8),
                outline=_scale(hc, 0.6),
                width=0.005,
            )
        elif hat == "baseball cap":
            cv.poly(
                cv.arc_points(0.0, base, fa + 0.035, 0.11, math.pi, 2 * math.pi, 14),
                fill=hc,
                outline=_scale(hc, 0.6),
                width=0.005,
            )
            cv.ellipse(0.06, base + 0.0, fa + 0.06, 0.028, fill=_scale(hc, 0.75))
        elif hat == "top hat":
            cv.poly(
                [(-0.11, base - 0.17), (0.11, base - 0.17), (0.11, base - 0.02), (-0.11, base - 0.02)],
                fill=hc,
                outline=_scale(hc, 0.55),
                width=0.005,
            )
            cv.poly(
                [(-0.11, base - 0.065), (0.11, base - 0.065), (0.11, base - 0.04), (-0.11, base - 0.04)],
                fill=_mix(hc, (240, 240, 240), 0.6),
            )
            cv.ellipse(0.0, base - 0.015, 0.21, 0.026, fill=_scale(hc, 0.8))
        else:  # sun hat
            cv.ellipse(
                0.0,
                base - 0.02,
                fa + 0.14,
                0.05,
                fill=_mix(hc, (230, 200, 140), 0.55),
                outline=_scale(hc, 0.6),
                width=0.004,
            )
            cv.poly(
                cv.arc_points(0.0, base - 0.035, 0.15, 0.11, math.pi, 2 * math.pi, 12),
                fill=_mix(hc, (230, 200, 140), 0.55),
                outline=_scale(hc, 0.6),
                width=0.004,
            )
            cv.line([(-0.148, base - 0.06), (0.148, base - 0.06)], hc, 0.02)

    image = cv.image
    if ss > 1:
        image = image.reduce(ss)
    return image
