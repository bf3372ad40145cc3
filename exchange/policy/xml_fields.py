"""Field filtering of SOAP responses: a grant's ``fields`` applied to XML (docs/design.md §7).

The fields of a SOAP response are the child elements of its ``<{serviceCode}Response>`` element,
named by local name; dotted paths step into nested elements (``address.locality``) exactly as for
JSON (:mod:`exchange.policy.fields`, whose compiled field trees this module walks). XML has no
lists: a repeated element is a repeated field, so ``children[].nationalId`` and
``children.nationalId`` mean the same thing, applied to every ``<children>`` element.

Filtering fails closed, like the JSON filter: an element that no granted path names is removed
with everything below it; an element granted whole (``address``) is kept as it is, attributes and
all; an element only partly granted (``address.locality``) keeps just its granted children and
loses its own attributes, text (mixed content included), comments and processing
instructions; a partly granted element
left without children is removed. The ``<…Response>`` element itself keeps its name and
namespace declarations only.

Works in place on an lxml element; no IO.
"""

from __future__ import annotations

from lxml import etree

from exchange.policy.fields import FieldNode, compile_fields


def _strip(element: etree._Element) -> None:
    """What is not a child element of a partly granted element is not released."""
    element.text = None
    for name in list(element.attrib):
        del element.attrib[name]


def _step(node: FieldNode) -> FieldNode:
    """XML's repeated elements are JSON's lists: ``a[]`` names each ``<a>``."""
    while not node.whole and node.keys is None and node.items is not None:
        node = node.items
    return node


def _filter(element: etree._Element, node: FieldNode, released: set[str]) -> bool:
    """Filter ``element``'s children by ``node``; True if anything granted is left."""
    _strip(element)
    kept = False
    for child in list(element):
        if not isinstance(child.tag, str):
            element.remove(child)
            continue
        child.tail = None
        sub = None if node.keys is None else node.keys.get(etree.QName(child).localname)
        sub = None if sub is None else _step(sub)
        if sub is None:
            element.remove(child)
        elif sub.whole:
            released.add(sub.path)
            kept = True
        elif _filter(child, sub, released):
            kept = True
        else:
            element.remove(child)
    return kept


def filter_response_element(element: etree._Element, fields: tuple[str, ...]) -> tuple[str, ...]:
    """Keep only the granted fields below ``element`` (in place); the released paths, sorted."""
    released: set[str] = set()
    _filter(element, _step(compile_fields(fields)), released)
    return tuple(sorted(released))
