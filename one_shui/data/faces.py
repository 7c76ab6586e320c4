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
    "Black_Hair": (25, 20, 20),
    "Brown_Hair": (100, 60, 30),
    "Blond_Hair": (225, 195, 110),
    "Gray_Hair": (165, 165, 165),
    None: (150, 60, 30),
}


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

    def mirrored(self, cx, dx, shape, *args, **kwargs):
        """``shape`` at cx - dx and cx + dx (both sides of the face)."""
        for x in (cx - dx, cx + dx):
            getattr(self, shape)(x, *args, **kwargs)


def _shade(colour, factor):
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _draw(pen: _Pen, face: Face, hair: str | None, shown: frozenset[str], age: float) -> None:
    has = shown.__contains__
    cx = 0.5
    width = face.width * (1.18 if has("Chubby") else 1.0) * (0.9 if has("Oval_Face") else 1.0)
    height = face.height * (1.1 if has("Oval_Face") else 1.0) * (0.85 + 0.15 * min(1.0, age * 2.5))
    cy = 0.52
    top, chin = cy - height / 2, cy + height / 2
    skin = _shade(face.skin, 1.3 if has("Pale_Skin") else 1.0)
    hair_colour = HAIR_COLOURS["Gray_Hair" if age > 0.8 and hair is None else hair]
    long_hair = not has("Male")
    # behind the face: long hair, neck and clothes, necktie, necklace
    if long_hair and not has("Bald"):
        pen.ellipse(cx, cy, width / 2 + 0.06, height / 2 + 0.04, hair_colour)
    pen.polygon([(cx - 0.08, chin - 0.05), (cx + 0.08, chin - 0.05), (cx + 0.1, 1.0), (cx - 0.1, 1.0)], skin)
    pen.polygon([(0.12, 1.0), (0.22, chin + 0.07), (0.78, chin + 0.07), (0.88, 1.0)], (60, 70, 95))
    if has("Wearing_Necktie"):
        pen.polygon(
            [(cx - 0.03, chin + 0.07), (cx + 0.03, chin + 0.07), (cx + 0.04, 1.0), (cx - 0.04, 1.0)],
            (170, 30, 40),
        )
    if has("Wearing_Necklace"):
        pen.arc(cx, chin + 0.02, 0.09, 0.06, 20, 160, (235, 205, 60), 0.018)
    # ears, earrings, the face
    pen.mirrored(cx, width / 2, "ellipse", cy, 0.03, 0.05, _shade(skin, 0.9))
    if has("Wearing_Earrings"):
        pen.mirrored(cx, width / 2, "ellipse", cy + 0.07, 0.018, 0.018, (245, 215, 50))
    pen.ellipse(cx, cy, width / 2, height / 2, skin)
    if has("Double_Chin"):
        pen.arc(cx, chin - 0.01, width / 4, 0.04, 20, 160, _shade(skin, 0.7), 0.012)
    # hair on top: none when bald; a higher line when receding; bangs over the forehead; sideburns
    if not has("Bald"):
        line = top + (0.02 if has("Receding_Hairline") else 0.09)
        crown = [(cx - width / 2 - 0.01, line + 0.04), (cx - width / 2 + 0.02, top - 0.03)]
        crown += [(cx + width / 2 - 0.02, top - 0.03), (cx + width / 2 + 0.01, line + 0.04)]
        if has("Wavy_Hair"):
            crown += [(cx + 0.12 - 0.06 * k, line + (0.03 if k % 2 else 0.0)) for k in range(5)]
        else:
            crown += [(cx + width / 2 - 0.04, line), (cx - width / 2 + 0.04, line)]
        pen.polygon(crown, hair_colour)
        if has("Bangs"):
            pen.polygon(
                [
                    (cx - width / 3, line - 0.01),
                    (cx + width / 3, line - 0.01),
                    (cx + width / 4, line + 0.08),
                    (cx - width / 4, line + 0.08),
                ],
                hair_colour,
            )
        if has("Sideburns"):
            pen.mirrored(cx, width / 2 - 0.02, "ellipse", cy + 0.01, 0.018, 0.07, hair_colour)
    if has("Wearing_Hat"):
        pen.polygon(
            [
                (cx - width / 2 - 0.08, top + 0.07),
                (cx + width / 2 + 0.08, top + 0.07),
                (cx + width / 3, top - 0.1),
                (cx - width / 3, top - 0.1),
            ],
            (40, 40, 120),
        )
    _draw_eyes(pen, face, shown, cx, top + face.eye_height * height, age)
    _draw_lower_face(pen, face, shown, cx, cy, width, height, skin, hair_colour)
    if age > 0.55 and not has("Young"):  # wrinkles on the forehead, more with age
        for k in range(1 + int((age - 0.55) * 8)):
            y = top + 0.12 + 0.025 * k
            pen.line([(cx - 0.08, y), (cx + 0.08, y)], _shade(skin, 0.75), 0.006)


def _draw_eyes(pen: _Pen, face: Face, shown: frozenset[str], cx: float, eye_y: float, age: float) -> None:
    has = shown.__contains__
    dx, size = face.eye_spacing, face.eye_size * (1.3 - 0.5 * age)
    brow = (60, 45, 35)
    thick = 0.022 if has("Bushy_Eyebrows") else 0.01
    for side in (-1, 1):
        x = cx + side * dx
        if has("Arched_Eyebrows"):
            pen.arc(x, eye_y - 0.035, 0.045, 0.03, 200, 340, brow, thick)
        else:
            inner, outer = eye_y - 0.045 + face.brow_tilt, eye_y - 0.045 - face.brow_tilt
            pen.line([(x - side * 0.04, inner), (x + side * 0.04, outer)], brow, thick)
        if has("Heavy_Makeup"):
            pen.ellipse(x, eye_y - 0.008, size * 1.5, size * 0.9, (120, 60, 130))
        pen.ellipse(x, eye_y, size, size * (0.3 if has("Narrow_Eyes") else 0.7), (250, 250, 250))
        pen.ellipse(x, eye_y, size * 0.45, size * (0.25 if has("Narrow_Eyes") else 0.45), (40, 30, 30))
        if has("Bags_Under_Eyes"):
            pen.arc(x, eye_y + 0.02, size * 1.1, 0.015, 20, 160, (110, 80, 80), 0.008)
        if has("Eyeglasses"):
            pen.ellipse(x, eye_y, 0.055, 0.04, None, width=0.01, outline=(20, 20, 20))
    if has("Eyeglasses"):
        pen.line([(cx - dx + 0.055, eye_y), (cx + dx - 0.055, eye_y)], (20, 20, 20), 0.01)


def _draw_lower_face(pen, face: Face, shown, cx, cy, width, height, skin, hair_colour) -> None:
    has = shown.__contains__
    nose_top, nose = cy - 0.02, face.nose_length * (1.35 if has("Big_Nose") else 1.0)
    tip = 0.012 if has("Pointy_Nose") else 0.03
    pen.polygon(
        [(cx, nose_top), (cx - tip - 0.01, nose_top + nose), (cx + tip + 0.01, nose_top + nose)],
        _shade(skin, 0.82),
    )
    if has("Rosy_Cheeks"):
        pen.mirrored(cx, width / 3.2, "ellipse", cy + 0.04, 0.035, 0.025, (225, 110, 110))
    if has("High_Cheekbones"):
        for side in (-1, 1):
            pen.line(
                [(cx + side * width / 4, cy + 0.01), (cx + side * width / 2.6, cy - 0.02)],
                _shade(skin, 1.2),
                0.012,
            )
    mouth_y = cy + height / 2 - 0.11
    mouth = face.mouth_width * (1.15 if has("Big_Lips") else 1.0)
    lips = (200, 30, 60) if has("Wearing_Lipstick") else _shade(skin, 0.65)
    lip = 0.02 if has("Big_Lips") else 0.011
    if has("5_o_Clock_Shadow"):
        pen.ellipse(cx, mouth_y + 0.04, width / 2.3, 0.07, _shade(skin, 0.8))
    if not has("No_Beard"):
        jaw = mouth_y - 0.03
        beard = [(cx - width / 2 + 0.02, jaw), (cx + width / 2 - 0.02, jaw)]
        beard += [(cx + width / 4, cy + height / 2 + 0.01), (cx - width / 4, cy + height / 2 + 0.01)]
        pen.polygon(beard, hair_colour)
    if has("Goatee"):
        pen.ellipse(cx, mouth_y + 0.06, 0.04, 0.04, hair_colour)
    if has("Mouth_Slightly_Open"):
        pen.ellipse(cx, mouth_y + 0.005, mouth / 2.3, 0.022, (60, 20, 25))
    if has("Smiling"):
        pen.arc(cx, mouth_y - 0.02, mouth / 2, 0.035, 20, 160, lips, lip)
    else:
        pen.line([(cx - mouth / 2, mouth_y), (cx + mouth / 2, mouth_y)], lips, lip)
    if has("Mustache"):
        pen.polygon(
            [
                (cx - mouth / 2, mouth_y - 0.012),
                (cx + mouth / 2, mouth_y - 0.012),
                (cx + mouth / 2.5, mouth_y - 0.035),
                (cx - mouth / 2.5, mouth_y - 0.035),
            ],
            hair_colour,
        )


def random_face(rng: np.random.Generator) -> Face:
    """A person's fixed look."""
    tone = rng.uniform(0.35, 1.0)
    skin = (int(120 + 120 * tone), int(80 + 110 * tone), int(60 + 100 * tone))
    return Face(
        skin=skin,
        width=rng.uniform(0.4, 0.5),
        height=rng.uniform(0.52, 0.62),
        eye_height=rng.uniform(0.4, 0.47),
        eye_spacing=rng.uniform(0.085, 0.115),
        eye_size=rng.uniform(0.022, 0.032),
        nose_length=rng.uniform(0.06, 0.09),
        mouth_width=rng.uniform(0.1, 0.16),
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
