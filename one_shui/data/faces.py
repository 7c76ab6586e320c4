"""Procedural faces for the embedded dataset, drawn with Pillow: a person is a fixed face (geometry, skin,
hair), recognisable across their photos; a photo varies the pose (shift, scale, small rotation), the
light, the background and whatever the photo's attributes show (a smile, glasses, a hat...).

Each CelebA attribute that can be drawn is a visible, localised feature; ``Attractive`` cannot, and
stays a hidden trait of the person. Age (the MUFAC groups, or CelebA's ``Young``) shows in the face's
proportions, wrinkles and hair. Faces are drawn at four times the image size and downsampled, and are
symmetric under a horizontal flip, so a flip augmentation keeps every label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4
HAIR_COLOURS = {  # RGB of each CelebA hair colour; a person with none of them has red hair
    "Black_Hair": (20, 15, 15),
    "Brown_Hair": (125, 75, 35),
    "Blond_Hair": (240, 210, 110),
    "Gray_Hair": (175, 175, 180),
    None: (215, 70, 25),
}
PALE = (250, 232, 222)  # the skin of Pale_Skin, lighter than every skin tone


@dataclass(frozen=True)
class Face:
    """A person's fixed look, in units of the image side."""

    skin: tuple[int, int, int]
    width: float
    height: float
    eye_height: float
    eye_spacing: float
    eye_size: float
    nose_length: float
    mouth_width: float
    brow_tilt: float


def draw_face(
    person: Face, hair: str | None, shown: frozenset[str], age: float, rng, size: int
) -> np.ndarray:
    """One photo of ``person`` with the attributes ``shown`` (CelebA names), at ``age`` in [0, 1]
    (0: a small child, 1: the oldest group), as a (size, size, 3) uint8 array."""
    side = size * SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(40, 216, 3))
    image = Image.new("RGB", (side, side), background)
    pen = _Pen(ImageDraw.Draw(image), side)
    _draw(pen, person, hair, shown, age)
    image = image.transform(image.size, Image.AFFINE, _pose(rng, side), Image.BICUBIC, fillcolor=background)
    if "Blurry" in shown:
        image = image.filter(ImageFilter.GaussianBlur(radius=1.2 * SUPERSAMPLE))
    pixels = np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
    light = rng.uniform(0.8, 1.15) * (1 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, size))[None, :, None]
    return (np.clip(pixels * light, 0, 1) * 255).round().astype(np.uint8)


def _pose(rng: np.random.Generator, side: int) -> tuple[float, ...]:
    """A random small rotation (up to 6 degrees), scale (+-7 %) and shift (+-4 % of the side) about the
    centre, as the inverse affine map Pillow's transform takes (output pixel -> input pixel)."""
    angle, scale = np.radians(rng.uniform(-6, 6)), rng.uniform(0.93, 1.07)
    tx, ty = rng.uniform(-0.04, 0.04, 2) * side
    c = side / 2
    a, b = np.cos(angle) / scale, np.sin(angle) / scale
    d, e = -b, a
    return (a, b, c - a * (c + tx) - b * (c + ty), d, e, c - d * (c + tx) - e * (c + ty))


class _Pen:
    """Draws shapes given in units of the image side."""

    def __init__(self, draw: ImageDraw.ImageDraw, side: int):
        self.draw, self.side = draw, side

    def ellipse(self, cx, cy, rx, ry, fill, width=0, outline=None):
        s = self.side
        box = [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]
        self.draw.ellipse(box, fill=fill, outline=outline, width=int(width * s))

    def polygon(self, points, fill):
        self.draw.polygon([(x * self.side, y * self.side) for x, y in points], fill=fill)

    def line(self, points, fill, width):
        self.draw.line(
            [(x * self.side, y * self.side) for x, y in points],
            fill=fill,
            width=max(1, int(width * self.side)),
        )

    def arc(self, cx, cy, rx, ry, start, end, fill, width):
        s = self.side
        box = [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]
        self.draw.arc(box, start, end, fill=fill, width=max(1, int(width * s)))

    def rectangle(self, cx, top, half_width, bottom, fill):
        s = self.side
        self.draw.rectangle([(cx - half_width) * s, top * s, (cx + half_width) * s, bottom * s], fill=fill)

    def chord(self, cx, cy, rx, ry, start, end, fill, outline, width):
        s = self.side
        box = [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]
        self.draw.chord(box, start, end, fill=fill, outline=outline, width=max(1, int(width * s)))

    def line_at(self, cx, cy, length, fill, width):
        """A vertical line of ``length`` centred on (cx, cy)."""
        self.line([(cx, cy - length / 2), (cx, cy + length / 2)], fill, width)

    def mirrored(self, cx, dx, shape, *args, **kwargs):
        """``shape`` at cx - dx and cx + dx (both sides of the face)."""
        for x in (cx - dx, cx + dx):
            getattr(self, shape)(x, *args, **kwargs)


def _shade(colour, factor):
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _contrast(colour):
    """A shade that stands out against ``colour``: darker, or lighter for a very dark colour."""
    return _shade(colour, 0.55) if sum(colour) > 150 else tuple(c + 80 for c in colour)


def _draw(pen: _Pen, face: Face, hair: str | None, shown: frozenset[str], age: float) -> None:
    has = shown.__contains__
    cx, cy = 0.5, 0.5
    grown = 0.7 + 0.3 * min(1.0, age * 2)  # a child's head is smaller
    width = face.width * grown * (1.35 if has("Chubby") else 1.0) * (0.75 if has("Oval_Face") else 1.0)
    height = face.height * grown * (1.2 if has("Oval_Face") else 1.0)
    top, chin = cy - height / 2, cy + height / 2
    skin = PALE if has("Pale_Skin") else face.skin
    hair_colour = HAIR_COLOURS["Gray_Hair" if age > 0.8 and hair is None else hair]
    scalp = not has("Bald")
    # behind the face: long or straight hair, neck and clothes, necktie, necklace
    if scalp and not has("Male"):
        pen.ellipse(cx, cy, width / 2 + 0.07, height / 2 + 0.05, hair_colour)
    pen.polygon([(cx - 0.08, chin - 0.05), (cx + 0.08, chin - 0.05), (cx + 0.1, 1.0), (cx - 0.1, 1.0)], skin)
    pen.polygon([(0.1, 1.0), (0.2, chin + 0.06), (0.8, chin + 0.06), (0.9, 1.0)], (60, 70, 95))
    if scalp and has("Straight_Hair"):  # straight locks down onto the shoulders
        pen.mirrored(cx, width / 2 + 0.06, "rectangle", top + 0.08, 0.045, chin + 0.14, hair_colour)
    if has("Wearing_Necktie"):
        pen.polygon(
            [(cx - 0.035, chin + 0.06), (cx + 0.035, chin + 0.06), (cx + 0.05, 1.0), (cx - 0.05, 1.0)],
            (190, 25, 35),
        )
    if has("Wearing_Necklace"):
        pen.arc(cx, chin + 0.01, 0.11, 0.07, 20, 160, (250, 220, 40), 0.03)
    if has("Double_Chin"):
        pen.ellipse(cx, chin, width / 3.2, 0.05, _shade(skin, 0.8))
    # ears, earrings, the face
    pen.mirrored(cx, width / 2, "ellipse", cy, 0.035, 0.055, _shade(skin, 0.9))
    if has("Wearing_Earrings"):
        pen.mirrored(cx, width / 2 + 0.01, "ellipse", cy + 0.1, 0.05, 0.05, (255, 225, 30))
    pen.ellipse(cx, cy, width / 2, height / 2, skin)
    if scalp:
        _draw_hair(pen, shown, cx, cy, top, width, hair_colour)
    if has("Wearing_Hat"):
        pen.polygon(
            [
                (cx - width / 2 - 0.08, top + 0.07),
                (cx + width / 2 + 0.08, top + 0.07),
                (cx + width / 3, top - 0.1),
                (cx - width / 3, top - 0.1),
            ],
            (40, 40, 140),
        )
    _draw_eyes(pen, face, shown, cx, top + face.eye_height * height, age)
    _draw_lower_face(pen, face, shown, cx, cy, width, height, skin, hair_colour)
    if age > 0.55 and not has("Young"):  # bold lines on the forehead and the cheeks, more with age
        wrinkle = _shade(skin, 0.5)
        for k in range(1 + int((age - 0.55) * 8)):
            y = top + 0.11 + 0.035 * k
            pen.line([(cx - 0.1, y), (cx + 0.1, y)], wrinkle, 0.025)
        pen.mirrored(cx, width / 4, "line_at", cy + 0.03, 0.08, wrinkle, 0.025)


def _draw_hair(pen: _Pen, shown: frozenset[str], cx, cy, top, width, colour) -> None:
    """The crown: a wavy or a straight edge, a high and narrow one when receding; bangs; sideburns."""
    has = shown.__contains__
    receding = has("Receding_Hairline")
    line = top + (0.015 if receding else 0.1)
    side = width / 2 - (0.09 if receding else 0.0)
    crown = [(cx - side - 0.01, line + 0.03), (cx - side + 0.03, top - 0.035)]
    crown += [(cx + side - 0.03, top - 0.035), (cx + side + 0.01, line + 0.03)]
    if has("Wavy_Hair"):
        crown += [(cx + side - side * k / 3, line + (0.045 if k % 2 else -0.01)) for k in range(7)]
    else:
        crown += [(cx + side - 0.04, line), (cx - side + 0.04, line)]
    pen.polygon(crown, colour)
    if has("Bangs"):
        pen.polygon(
            [(cx - width / 3, line - 0.01), (cx + width / 3, line - 0.01), (cx + width / 4, line + 0.1),
             (cx - width / 4, line + 0.1)],
            colour,
        )  # fmt: skip
    if has("Sideburns"):
        pen.mirrored(cx, width / 2 - 0.025, "ellipse", cy + 0.02, 0.035, 0.1, _contrast(colour))


def _draw_eyes(pen: _Pen, face: Face, shown: frozenset[str], cx: float, eye_y: float, age: float) -> None:
    has = shown.__contains__
    dx, size = face.eye_spacing, face.eye_size * (1.2 - 0.3 * age)
    brow = (55, 40, 30)
    thick = 0.035 if has("Bushy_Eyebrows") else 0.018
    for side in (-1, 1):
        x = cx + side * dx
        if has("Heavy_Makeup"):
            pen.ellipse(x, eye_y - 0.01, size * 2.1, size * 1.5, (130, 50, 150))
        if has("Arched_Eyebrows"):  # a high arch, against a straight brow
            pen.arc(x, eye_y - 0.025, 0.05, 0.06, 200, 340, brow, thick)
        else:
            inner, outer = eye_y - 0.055 + face.brow_tilt, eye_y - 0.055 - face.brow_tilt
            pen.line([(x - side * 0.045, inner), (x + side * 0.045, outer)], brow, thick)
        if has("Narrow_Eyes"):  # a dark slit, no white showing
            pen.line([(x - size * 1.1, eye_y), (x + size * 1.1, eye_y)], (30, 25, 25), 0.025)
        else:
            pen.ellipse(x, eye_y, size, size * 0.8, (250, 250, 250))
            pen.ellipse(x, eye_y, size * 0.5, size * 0.5, (30, 25, 25))
        if has("Bags_Under_Eyes"):
            pen.arc(x, eye_y + 0.025, size * 1.1, 0.02, 20, 160, (100, 65, 75), 0.024)
        if has("Eyeglasses"):
            pen.ellipse(x, eye_y, 0.06, 0.045, None, width=0.012, outline=(15, 15, 15))
    if has("Eyeglasses"):
        pen.line([(cx - dx + 0.06, eye_y), (cx + dx - 0.06, eye_y)], (15, 15, 15), 0.012)


def _draw_lower_face(pen, face: Face, shown, cx, cy, width, height, skin, hair_colour) -> None:
    has = shown.__contains__
    nose_top = cy - 0.03
    nose = face.nose_length * (1.6 if has("Big_Nose") else 1.0)
    half = (0.008 if has("Pointy_Nose") else 0.04) * (1.5 if has("Big_Nose") else 1.0)
    pen.polygon(
        [(cx, nose_top), (cx - half - 0.008, nose_top + nose), (cx + half + 0.008, nose_top + nose)],
        _shade(skin, 0.62),
    )
    if has("Rosy_Cheeks"):
        pen.mirrored(cx, width / 3.2, "ellipse", cy + 0.05, 0.045, 0.035, (235, 100, 110))
    if has("High_Cheekbones"):
        pen.mirrored(cx, width / 3, "ellipse", cy - 0.005, 0.05, 0.018, _shade(skin, 1.35))
    mouth_y = cy + height / 2 - 0.11
    mouth = face.mouth_width * (1.2 if has("Big_Lips") else 1.0)
    lips = (205, 20, 60) if has("Wearing_Lipstick") else _shade(skin, 0.6)
    lip = 0.03 if has("Big_Lips") else 0.014
    if has("5_o_Clock_Shadow"):
        pen.ellipse(cx, mouth_y + 0.04, width / 2.3, 0.08, _shade(skin, 0.7))
    if not has("No_Beard"):
        jaw = mouth_y - 0.03
        beard = [(cx - width / 2 + 0.02, jaw), (cx + width / 2 - 0.02, jaw)]
        beard += [(cx + width / 4, cy + height / 2 + 0.01), (cx - width / 4, cy + height / 2 + 0.01)]
        pen.polygon(beard, hair_colour)
    if has("Goatee"):  # in a contrast to the hair, to show over a beard
        pen.ellipse(cx, mouth_y + 0.065, 0.05, 0.05, _contrast(hair_colour))
    if has("Mouth_Slightly_Open"):
        pen.ellipse(cx, mouth_y + 0.005, mouth / 2.4, 0.032, (50, 15, 20))
    if has("Smiling"):  # a wide grin showing the teeth
        pen.chord(cx, mouth_y - 0.02, mouth / 2 + 0.02, 0.06, 0, 180, (255, 255, 250), lips, lip)
    else:
        pen.line([(cx - mouth / 2, mouth_y), (cx + mouth / 2, mouth_y)], lips, lip)
    if has("Mustache"):  # in a contrast to the hair, to show over a beard
        pen.polygon(
            [
                (cx - mouth / 2 - 0.01, mouth_y - 0.014),
                (cx + mouth / 2 + 0.01, mouth_y - 0.014),
                (cx + mouth / 2.5, mouth_y - 0.045),
                (cx - mouth / 2.5, mouth_y - 0.045),
            ],
            _contrast(hair_colour),
        )


def random_face(rng: np.random.Generator) -> Face:
    """A person's fixed look; its ranges are narrower than what the shape attributes change (a chubby,
    oval or big-nosed face stands out from every face without the attribute)."""
    tone = rng.uniform(0.35, 1.0)
    skin = (int(120 + 120 * tone), int(80 + 110 * tone), int(60 + 100 * tone))
    return Face(
        skin=skin,
        width=rng.uniform(0.44, 0.5),
        height=rng.uniform(0.57, 0.62),
        eye_height=rng.uniform(0.42, 0.46),
        eye_spacing=rng.uniform(0.1, 0.12),
        eye_size=rng.uniform(0.034, 0.042),
        nose_length=rng.uniform(0.075, 0.09),
        mouth_width=rng.uniform(0.13, 0.17),
        brow_tilt=rng.uniform(-0.01, 0.01),
    )


HAIR = ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair")
SCALP = ("Bangs", "Receding_Hairline", "Straight_Hair", "Wavy_Hair", *HAIR)  # what a bald head cannot show
FACIAL_HAIR = ("Goatee", "Mustache", "Sideburns", "5_o_Clock_Shadow")
MAKEUP = ("Heavy_Makeup", "Wearing_Lipstick")


def coherent(shown: set[str]) -> frozenset[str]:
    """The attributes of one photo made drawable together: one hair colour at most, none on a bald head,
    straight or wavy hair, facial hair only on men, make-up only on women."""
    shown = set(shown)
    if "Bald" in shown:
        shown -= set(SCALP)
    colours = [name for name in HAIR if name in shown]
    shown -= set(colours[1:])
    if "Wavy_Hair" in shown:
        shown.discard("Straight_Hair")
    if "Male" in shown:
        shown -= set(MAKEUP)
    else:
        shown -= set(FACIAL_HAIR)
        shown.add("No_Beard")
    return frozenset(shown)


def hair_of(shown: frozenset[str]) -> str | None:
    """The hair colour a photo shows (None: red)."""
    return next((name for name in HAIR if name in shown), None)


# What ``coherent`` drops each attribute for (besides facial hair, which only men show), in an order that
# settles each attribute before those it drops.
DROPPED_BY = {
    "Bald": (),
    **{name: ("Bald", *HAIR[:k]) for k, name in enumerate(HAIR)},
    "Bangs": ("Bald",),
    "Receding_Hairline": ("Bald",),
    "Wavy_Hair": ("Bald",),
    "Straight_Hair": ("Bald", "Wavy_Hair"),
    **{name: ("Male",) for name in MAKEUP},
}


def before_coherence(prevalence: dict[str, float]) -> dict[str, float]:
    """The prevalence to draw each attribute with so that, after ``coherent`` drops what cannot be drawn
    together, it shows about as often as ``prevalence`` asks (at most 0.95; independent draws): a beard
    that only men can show is drawn more often when men are few."""
    drawn = dict(prevalence)
    for name, dropped_by in DROPPED_BY.items():
        shows = float(np.prod([1 - drawn[other] for other in dropped_by]))
        drawn[name] = min(0.95, prevalence[name] / shows)
    for name in FACIAL_HAIR:
        drawn[name] = min(0.95, prevalence[name] / drawn["Male"])
    return drawn
