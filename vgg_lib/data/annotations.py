"""ILSVRC localisation annotations (Appendix A): one Pascal-VOC-style XML file per image.

::

    <annotation>
      <size><width>500</width><height>375</height></size>
      <object><name>n01440764</name>
        <bndbox><xmin>12</xmin><ymin>40</ymin><xmax>300</xmax><ymax>360</ymax></bndbox>
      </object> ...
    </annotation>

Read with the standard library. Coordinates are returned as written in the file (pixels of the
original image, the size given in ``<size>``); each object's synset is its ``<name>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class Annotation:
    """One image's objects: ``boxes`` float64 ``(n, 4)`` as ``(xmin, ymin, xmax, ymax)`` and
    their synsets ``names`` (e.g. ``"n01440764"``), in an image of ``width`` x ``height``."""

    path: Path
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray

    def boxes_of(self, synset: str) -> np.ndarray:
        """The boxes of one synset (ILSVRC's ground truth for an image of that class)."""
        return self.boxes[[n == synset for n in self.names]].reshape(-1, 4)


def _number(node, tag: str, path: Path, where: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"annotation {str(path)!r}: {where} has no <{tag}>; expected "
                         f"<{tag}>number</{tag}>")
    try:
        return float(child.text)
    except ValueError:
        raise ValueError(f"annotation {str(path)!r}: {where} <{tag}> is {child.text.strip()!r}, "
                         f"not a number") from None


def read_annotation(path) -> Annotation:
    """Parse one annotation file. ``FileNotFoundError`` if it is missing; ``ValueError`` naming
    the file and the problem if it is not well-formed XML, lacks ``<size>``, an object lacks its
    ``<name>`` or a box coordinate, or a box is not inside the image (``0 <= xmin <= xmax <=
    width``, the same for y)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist; expected one XML file "
                                f"per image (ILSVRC's Annotation/<synset>/<image>.xml)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"annotation {str(path)!r} is not well-formed XML ({e})") from None
    if root.tag != "annotation":
        raise ValueError(f"annotation {str(path)!r}: the root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise ValueError(f"annotation {str(path)!r} has no <size> (the image's width and height)")
    width, height = (int(_number(size, tag, path, "<size>")) for tag in ("width", "height"))
    names, boxes = [], []
    for k, obj in enumerate(root.findall("object")):
        name = obj.findtext("name", "").strip()
        if not name:
            raise ValueError(f"annotation {str(path)!r}: object {k} has no <name> (its synset)")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"annotation {str(path)!r}: object {k} ({name}) has no <bndbox>")
        x0, y0, x1, y1 = (_number(box, tag, path, f"object {k} ({name})") for tag in BOX_TAGS)
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise ValueError(f"annotation {str(path)!r}: object {k} ({name}) box ({x0:g}, {y0:g}, {x1:g}, "
                             f"{y1:g}) is not inside the {width}x{height} image; allowed: "
                             f"0 <= xmin <= xmax <= {width}, 0 <= ymin <= ymax <= {height}")
        names.append(name)
        boxes.append((x0, y0, x1, y1))
    return Annotation(path, width, height, names, np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def read_annotations(folder) -> dict[str, Annotation]:
    """Every ``*.xml`` under ``folder`` (recursively), keyed by file stem (the image's name)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder {str(folder)!r} does not exist")
    return {p.stem: read_annotation(p) for p in sorted(folder.rglob("*.xml"))}
