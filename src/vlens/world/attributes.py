"""The closed vocabulary of the world: every attribute family and its possible values.

Everything downstream (captions, concept scores, the benchmark) names attributes with these
exact strings, so they live in one place.
"""

from __future__ import annotations

SHAPES = ["circle", "square", "triangle", "star", "cross", "heart", "hexagon", "diamond"]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
BACKGROUNDS = ["grass", "water", "sand", "snow", "brick", "sky"]
SIZES = ["small", "medium", "large"]
LIGHTINGS = ["dark", "normal", "bright"]
TAGS = ["tag", "no tag"]
CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"]

ATTRIBUTES: dict[str, list[str]] = {
    "shape": SHAPES,
    "color": COLORS,
    "background": BACKGROUNDS,
    "size": SIZES,
    "lighting": LIGHTINGS,
    "tag": TAGS,
    "blur": ["blurred", "sharp"],
    "noise": ["noisy", "clean"],
    "occlusion": ["occluded", "unoccluded"],
}
"""Attribute family -> values. In `WorldItem.attrs` the families `tag`, `blur`, `noise` and
`occlusion` are stored as booleans; the strings here are their names in words (True = first)."""

BOOL_FAMILIES = ("tag", "blur", "noise", "occlusion")

# RGB of each object colour (before lighting).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 185, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (145, 50, 190),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
}

# Object radius as a fraction of the image side: (low, high) per size.
SIZE_RADIUS: dict[str, tuple[float, float]] = {
    "small": (0.09, 0.12),
    "medium": (0.15, 0.19),
    "large": (0.23, 0.28),
}


def attribute_value(family: str, attrs: dict) -> str:
    """The value of `family` in words for an item's attrs (booleans become their names)."""
    v = attrs[family]
    if family in BOOL_FAMILIES:
        return ATTRIBUTES[family][0] if v else ATTRIBUTES[family][1]
    return str(v)
