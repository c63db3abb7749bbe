"""A glTF's node hierarchy as trimesh should place it: every instance a node of its own.

- EXT_mesh_gpu_instancing: a node's N instances (TRANSLATION, ROTATION, SCALE accessors) become
  N child nodes, each with the node's mesh; trimesh would draw the mesh once.
- A node listed as the child of two parents, which the specification forbids but exporters
  write: Kiln places it under each of them (its subtree is copied for every parent after the
  first), as renderers that follow the hierarchy draw it. trimesh would keep only one parent.
- A hierarchy that loops back on itself is damaged (CorruptFile).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tasks.errors import CorruptFile, TooLarge

INSTANCING = "EXT_mesh_gpu_instancing"
MAX_NODES = 100_000
"""Nodes a file may have once its instances and shared subtrees are spelled out."""

PLACING = ("mesh", "matrix", "translation", "rotation", "scale", "children", "name")
"""What a copied node keeps: what places its mesh."""

ReadFloats = Callable[[Any], NDArray[np.float32]]
"""An accessor's values as float32 (count, width), by accessor index."""


def spelled_out(tree: dict[str, Any], read: ReadFloats) -> bool:
    """Rewrite `tree`'s nodes in place (see the module); True when anything changed."""
    nodes = tree.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(node, dict) for node in nodes):
        return False
    _check_acyclic(nodes)
    instanced = _instances(nodes, read)  # first: a copied node takes its instances along
    shared = _split_shared(nodes)
    return shared or instanced


def _split_shared(nodes: list[dict[str, Any]]) -> bool:
    parents: dict[int, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for child in _children(node, nodes):
            parents[child].append(index)
    shared = {child: found for child, found in parents.items() if len(found) > 1}
    if not shared:
        return False
    for child, found in shared.items():
        for parent in found[1:]:
            children = nodes[parent]["children"]
            children[children.index(child)] = _copy_subtree(nodes, child)
    return True


def _copy_subtree(nodes: list[dict[str, Any]], root: int) -> int:
    """A copy of the node and its descendants appended to `nodes` (a node met twice below it is
    copied twice: every place is an instance); the copy's index."""
    start = len(nodes)
    pending = [root]  # the originals, in the order their copies go in: pending[j] at start + j
    made: list[dict[str, Any]] = []
    while len(made) < len(pending):  # breadth first: no recursion however deep the hierarchy
        if start + len(pending) > MAX_NODES:
            raise TooLarge(f"The glTF places more than {MAX_NODES:,} nodes, the limit.")
        original = nodes[pending[len(made)]]
        # only what places it: extras and extensions stay with the first
        duplicate = {key: copy.deepcopy(original[key]) for key in PLACING if key in original}
        children = _children(original, nodes)
        if children:
            duplicate["children"] = list(range(start + len(pending),
                                               start + len(pending) + len(children)))
            pending.extend(children)
        made.append(duplicate)
    nodes.extend(made)
    return start


def _check_acyclic(nodes: list[dict[str, Any]]) -> None:
    state = [0] * len(nodes)  # 0 unseen, 1 on the path, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        while stack:
            index, position = stack.pop()
            children = _children(nodes[index], nodes)
            if position < len(children):
                stack.append((index, position + 1))
                child = children[position]
                if state[child] == 1:
                    raise CorruptFile("The glTF's node hierarchy loops back on itself.")
                if state[child] == 0:
                    state[child] = 1
                    stack.append((child, 0))
            else:
                state[index] = 2


def _instances(nodes: list[dict[str, Any]], read: ReadFloats) -> bool:
    changed = False
    for node in list(nodes):
        extensions = node.get("extensions")
        if not isinstance(extensions, dict) or "mesh" not in node:
            continue
        extension = extensions.get(INSTANCING)
        if not isinstance(extension, dict):
            continue
        attributes = extension.get("attributes") or {}
        found = {name: read(attributes[name]) for name in ("TRANSLATION", "ROTATION", "SCALE")
                 if name in attributes}
        counts = {len(values) for values in found.values()}
        if len(counts) != 1:
            raise CorruptFile("The glTF's GPU instances have no transforms, or transforms of "
                              "different counts.")
        count = counts.pop()
        if len(nodes) + count > MAX_NODES:
            raise TooLarge(f"The glTF places {count:,} instances; the limit is {MAX_NODES:,} "
                           "nodes.")
        widths = {"TRANSLATION": 3, "ROTATION": 4, "SCALE": 3}
        if any(values.shape[1] != widths[name] for name, values in found.items()):
            raise CorruptFile("The glTF's GPU instance transforms have the wrong shape.")
        mesh = node.pop("mesh")
        del extensions[INSTANCING]
        children = node.setdefault("children", [])
        for instance in range(count):
            child: dict[str, Any] = {"mesh": mesh}
            for name, values in found.items():
                child[name.lower()] = values[instance].tolist()
            nodes.append(child)
            children.append(len(nodes) - 1)
        changed = True
    return changed


def _children(node: dict[str, Any], nodes: list[dict[str, Any]]) -> list[int]:
    children = node.get("children")
    if children is None:
        return []
    if not isinstance(children, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(nodes)
            for c in children):
        raise CorruptFile("A glTF node has children that are not nodes of the file.")
    return children
