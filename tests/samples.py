"""Small, coherent datasets in public formats, written by tests (nothing is downloaded).

:func:`write_wands_sample` writes a WANDS-format directory (tab-separated ``product.csv``,
``query.csv``, ``label.csv``, with the quirks of the real files: a header "category
hierarchy" with a space, empty numeric fields, ``''`` and ``"`` inside text, features written
as ``key : value`` or ``key:value``, dozens of "no" features). Products are furniture built
from (type, colour, material) combinations, two products per combination, so a query such as
"grey velvet sofa" has Exact labels on the grey velvet sofas, Partial labels on other sofas
and Irrelevant labels on other furniture: a search over the loaded catalog can be checked
end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Kind:
    noun: str
    product_class: str
    hierarchy: str
    materials: tuple[str, str, str]
    colour_key: str
    upholstered: bool


KINDS = (
    _Kind(
        "sofa",
        "Sofas",
        "Furniture / Living Room Furniture / Sofas & Couches / Sofas",
        ("velvet", "linen", "leather"),
        "color",
        True,
    ),
    _Kind(
        "accent chair",
        "Accent Chairs",
        "Furniture / Living Room Furniture / Chairs & Seating / Accent Chairs",
        ("leather", "velvet", "boucle"),
        "color",
        True,
    ),
    _Kind(
        "coffee table",
        "Coffee Tables",
        "Furniture / Living Room Furniture / Coffee Tables & End Tables / Coffee Tables",
        ("walnut", "oak", "glass"),
        "color",
        False,
    ),
    _Kind(
        "dining table",
        "Kitchen & Dining Tables",
        "Furniture / Kitchen & Dining Furniture / Dining Tables & Seating / Dining Tables",
        ("marble", "oak", "walnut"),
        "color",
        False,
    ),
    _Kind(
        "area rug",
        "Area Rugs",
        "Rugs / Area Rugs",
        ("wool", "jute", "cotton"),
        "primarycolor",
        False,
    ),
    _Kind(
        "bookcase",
        "Bookcases",
        "Furniture / Office Furniture / Bookcases",
        ("pine", "metal", "oak"),
        "maincolor",
        False,
    ),
)
"""Product types; product ``i`` is of type ``KINDS[i % 6]``."""
COLOURS = ("grey", "blue", "green", "white", "black")
STYLES = ("modern", "mid-century modern", "farmhouse / country", "glam", "industrial")
STEMS = ("aldridge", "bexley", "corwin", "dalton", "elsworth", "fenwick", "garland", "hollis")
QUERIES = (
    ("grey velvet sofa", "sofa", "grey", "velvet"),
    ("blue linen sofa", "sofa", "blue", "linen"),
    ("leather accent chair", "accent chair", None, "leather"),
    ("green accent chair", "accent chair", "green", None),
    ("walnut coffee table", "coffee table", None, "walnut"),
    ("marble dining table", "dining table", None, "marble"),
    ("wool area rug", "area rug", None, "wool"),
    ("white bookcase", "bookcase", "white", None),
)
"""(query text, product type, colour or None, material or None): Exact = all stated match."""
LABELS_PER_QUERY = 10


@dataclass(frozen=True)
class SampleProduct:
    product_id: str
    name: str
    kind: str
    colour: str
    material: str


@dataclass(frozen=True)
class WandsSample:
    """What :func:`write_wands_sample` wrote."""

    directory: Path
    products: tuple[SampleProduct, ...]
    exact: dict[str, tuple[str, ...]]
    """Query text -> product_ids labelled Exact (every product matching the query)."""


def sample_products(n_products: int = 60) -> tuple[SampleProduct, ...]:
    """Product ``i``: type ``i % 6``; combination ``k = i // 12`` sets colour and material,
    so each combination has two products (of different names) when ``n_products`` >= 60."""
    products = []
    for i in range(n_products):
        kind = KINDS[i % len(KINDS)]
        k = (i // len(KINDS)) // 2
        colour, material = COLOURS[k % len(COLOURS)], kind.materials[k % 3]
        stem = STEMS[(i // len(KINDS)) % len(STEMS)]
        if (i // len(KINDS)) % 2 == 0:
            name = f"{stem} {colour} {material} {kind.noun}"
        else:
            name = f"{stem} 84'' {kind.noun} in {colour} {material}"
        products.append(SampleProduct(str(10_000 + i), name, kind.noun, colour, material))
    return tuple(products)


def write_wands_sample(directory: Path, n_products: int = 60) -> WandsSample:
    """Write ``product.csv``, ``query.csv`` and ``label.csv`` (WANDS format) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    products = sample_products(n_products)
    kinds = {kind.noun: kind for kind in KINDS}
    product_rows = [
        [
            "product_id",
            "product_name",
            "product_class",
            "category hierarchy",
            "product_description",
            "product_features",
            "rating_count",
            "average_rating",
            "review_count",
        ]
    ]
    for i, p in enumerate(products):
        kind = kinds[p.kind]
        style = STYLES[i % len(STYLES)]
        width = 20 + (i * 7) % 70
        features = "|".join(
            [
                f"{kind.colour_key} : {p.colour}",
                f"primarymaterial : {p.material}",
                f"dsprimaryproductstyle : {style}",
                f"overallwidth-sidetoside:{width}",
                f"upholstered : {'yes' if kind.upholstered else 'no'}",
                "productcare : wipe clean with a soft dry cloth and avoid direct sunlight",
                "adultassemblyrequired : no",
                " : no",
                "warrantylength:1 year",
            ]
        )
        rated = i % 5 != 4
        rating_count = (i * 37) % 200 + 1
        product_rows.append(
            [
                p.product_id,
                p.name,
                kind.product_class,
                "" if p.kind == "bookcase" and i % 4 == 1 else kind.hierarchy,
                f"the {p.name.split()[0]} {p.kind} pairs {p.colour} {p.material} with a {style} "
                f'look . it measures {width}" wide .',
                features,
                str(rating_count) if rated else "",
                f"{3.0 + (i % 5) * 0.5:.1f}" if rated else "",
                str(rating_count // 2) if rated else "",
            ]
        )
    query_rows = [["query_id", "query", "query_class"]]
    label_rows = [["id", "query_id", "product_id", "label"]]
    exact: dict[str, tuple[str, ...]] = {}
    for query_id, (text, noun, colour, material) in enumerate(QUERIES):
        query_rows.append([str(query_id), text, kinds[noun].product_class])
        labelled = _judge(products, noun, colour, material, query_id)
        exact[text] = tuple(pid for pid, label in labelled if label == "Exact")
        for pid, label in labelled:
            label_rows.append([str(len(label_rows) - 1), str(query_id), pid, label])
    for name, rows in (
        ("product.csv", product_rows),
        ("query.csv", query_rows),
        ("label.csv", label_rows),
    ):
        with (directory / name).open("w", encoding="utf-8", newline="") as f:
            f.writelines("\t".join(row) + "\n" for row in rows)
    return WandsSample(directory, products, exact)


def _judge(
    products: tuple[SampleProduct, ...],
    noun: str,
    colour: str | None,
    material: str | None,
    salt: int,
) -> list[tuple[str, str]]:
    """Every Exact match, then Partial (same type), then Irrelevant, up to LABELS_PER_QUERY
    (more when there are more exact matches)."""
    same = [p for p in products if p.kind == noun]
    exact = [
        p
        for p in same
        if (colour is None or p.colour == colour) and (material is None or p.material == material)
    ]
    partial = [p for p in same if p not in exact][:4]
    other = [p for p in products if p.kind != noun]
    other = other[salt % max(1, len(other)) :] + other[: salt % max(1, len(other))]
    room = max(0, LABELS_PER_QUERY - len(exact) - len(partial))
    return (
        [(p.product_id, "Exact") for p in exact]
        + [(p.product_id, "Partial") for p in partial]
        + [(p.product_id, "Irrelevant") for p in other[:room]]
    )
