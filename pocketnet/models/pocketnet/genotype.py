"""Cell genotypes: which operation feeds each intermediate node from which earlier state.

A genotype lists, for the normal and the reduction cell, one entry per intermediate node; each
entry is the node's edges ``(operation, source)`` where source 0 is ``c_{k-2}``, 1 is ``c_{k-1}``
and 2, 3, ... are the earlier nodes. ``*_concat`` names the states concatenated as the output.

Two text forms are read and written:

* YAML (the shipped ``genotypes/*.yaml``)::

      name: softmax_casia
      normal:
        - [[dw_conv_3x3, 0], [dw_conv_1x1, 1]]
        ...
      normal_concat: [2, 3, 4, 5]

* the DARTS string ``Genotype(normal=[[('dw_conv_3x3', 0), ...], ...], normal_concat=range(2, 6),
  reduce=[...], reduce_concat=range(2, 6))``, parsed with :mod:`ast` (never evaluated). The flat
  DARTS list ``normal=[('op', i), ('op', j), ...]`` (two edges per node) is accepted as well.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pocketnet.models.pocketnet.ops import PRIMITIVES

__all__ = ["BUILTIN_GENOTYPES", "Genotype", "load_genotype", "parse_genotype"]

Edge = tuple[str, int]
Gene = tuple[tuple[Edge, ...], ...]

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

# Built-in genotype names (and their names in the official code) -> packaged YAML file.
BUILTIN_GENOTYPES: dict[str, str] = {
    "face": "face.yaml",
    "softmax_casia": "face.yaml",
    "cifar10": "cifar10.yaml",
    "softmax_cifar10": "cifar10.yaml",
    "lfw_dev": "lfw_dev.yaml",  # searched on lfw-dev by experiment=search_lfw
}


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cell genes with their output states; validated on construction."""

    normal: Gene
    normal_concat: tuple[int, ...]
    reduce: Gene
    reduce_concat: tuple[int, ...]
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            gene = _as_gene(getattr(self, kind), kind)
            concat = tuple(getattr(self, f"{kind}_concat"))
            object.__setattr__(self, kind, gene)
            object.__setattr__(self, f"{kind}_concat", concat)
            _check_concat(concat, len(gene), kind)

    def to_darts_string(self) -> str:
        """The DARTS ``Genotype(normal=[[...]], normal_concat=range(2, 6), ...)`` form."""
        parts = []
        for kind in ("normal", "reduce"):
            nodes = [list(node) for node in getattr(self, kind)]
            parts.append(f"{kind}={nodes!r}")
            parts.append(f"{kind}_concat={_concat_repr(getattr(self, f'{kind}_concat'))}")
        return f"Genotype({', '.join(parts)})"

    def to_yaml(self) -> str:
        """YAML text, one flow-style line per node."""
        lines = [f"name: {json.dumps(self.name)}"] if self.name else []
        for kind in ("normal", "reduce"):
            lines.append(f"{kind}:")
            for node in getattr(self, kind):
                edges = [[op, src] for op, src in node]
                lines.append(f"  - {yaml.safe_dump(edges, default_flow_style=True).strip()}")
            lines.append(f"{kind}_concat: {list(getattr(self, f'{kind}_concat'))}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_yaml(cls, text: str) -> Genotype:
        """Read the YAML form (keys ``normal``, ``normal_concat``, ``reduce``, ``reduce_concat``
        and an optional ``name``)."""
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"genotype YAML must be a mapping, got {type(data).__name__}")
        unknown = {str(key) for key in data} - {*_FIELDS, "name"}
        missing = set(_FIELDS) - set(data)
        if unknown or missing:
            raise ValueError(
                f"genotype YAML: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
        return cls(**{key: data[key] for key in _FIELDS}, name=str(data.get("name", "")))


def _as_gene(value: Any, kind: str) -> Gene:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"genotype {kind}: expected a non-empty list of nodes, got {value!r}")
    nodes = []
    for i, node in enumerate(value):
        if not isinstance(node, (list, tuple)) or not node:
            raise ValueError(f"genotype {kind} node {i}: expected a list of edges, got {node!r}")
        nodes.append(tuple(_as_edge(edge, kind, i) for edge in node))
    return tuple(nodes)


def _as_edge(edge: Any, kind: str, node: int) -> Edge:
    where = f"genotype {kind} node {node}"
    if not (isinstance(edge, (list, tuple)) and len(edge) == 2):
        raise ValueError(f"{where}: an edge is ('operation', source), got {edge!r}")
    op, src = edge
    if op not in PRIMITIVES:
        raise ValueError(f"{where}: unknown operation {op!r}; valid: {list(PRIMITIVES)}")
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < node + 2:
        raise ValueError(
            f"{where}: source {src!r} must be an int in [0, {node + 2}) "
            "(0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier nodes)"
        )
    return str(op), int(src)


def _check_concat(concat: tuple[int, ...], n_nodes: int, kind: str) -> None:
    if not concat or any(not isinstance(i, int) or not 2 <= i < n_nodes + 2 for i in concat):
        raise ValueError(
            f"genotype {kind}_concat {list(concat)} must list node states in [2, {n_nodes + 2})"
        )


def _concat_repr(concat: tuple[int, ...]) -> str:
    start = concat[0]
    if concat == tuple(range(start, start + len(concat))):
        return f"range({start}, {start + len(concat)})"
    return repr(list(concat))


def parse_genotype(text: str) -> Genotype:
    """Parse the DARTS string form safely (literals and ``range(a, b)`` only; nothing is run)."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"malformed genotype string ({err.msg}): {text!r}") from None
    is_call = isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    if not is_call or call.func.id != "Genotype" or len(call.args) > len(_FIELDS):
        raise ValueError(f"a genotype string looks like 'Genotype(normal=...)', got {text!r}")
    nodes = dict(zip(_FIELDS, call.args, strict=False))  # positional fields
    for keyword in call.keywords:
        if keyword.arg not in _FIELDS or keyword.arg in nodes:
            raise ValueError(f"genotype string: unexpected or repeated field {keyword.arg!r}")
        nodes[keyword.arg] = keyword.value
    missing = [name for name in _FIELDS if name not in nodes]
    if missing:
        raise ValueError(f"genotype string: missing fields {missing}")
    values = {}
    for name, node in nodes.items():
        values[name] = _concat(node) if name.endswith("_concat") else _gene(node, name)
    return Genotype(**values)


def _literal(node: ast.expr, name: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"genotype string: {name} must be a literal, got {ast.unparse(node)!r}"
        ) from None


def _gene(node: ast.expr, name: str) -> list:
    value = _literal(node, name)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"genotype string: {name} must be a list, got {value!r}")
    is_edge = [
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value
    ]
    if value and all(is_edge):  # flat DARTS list: two edges per node
        if len(value) % 2:
            raise ValueError(
                f"genotype string: flat {name} needs 2 edges per node, got {len(value)} edges"
            )
        return [value[i : i + 2] for i in range(0, len(value), 2)]
    return list(value)


def _concat(node: ast.expr) -> list[int]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        args = [_literal(arg, "range argument") for arg in node.args]
        if node.keywords or not 1 <= len(args) <= 3 or not all(isinstance(a, int) for a in args):
            raise ValueError(f"genotype string: bad concat {ast.unparse(node)!r}")
        return list(range(*args))
    value = _literal(node, "concat")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"genotype string: concat must be a list or range, got {value!r}")
    return list(value)


def load_genotype(name_or_path: str | Path) -> Genotype:
    """A genotype from a built-in name (``face``/``softmax_casia``, ``cifar10``/
    ``softmax_cifar10``, ``lfw_dev``), a YAML file, a text file holding the DARTS string, or that
    string."""
    text = str(name_or_path)
    if text in BUILTIN_GENOTYPES:
        resource = resources.files(__package__) / "genotypes" / BUILTIN_GENOTYPES[text]
        return Genotype.from_yaml(resource.read_text(encoding="utf-8"))
    if text.lstrip().startswith("Genotype("):
        return parse_genotype(text)
    path = Path(text)
    if path.is_file():
        content = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            return Genotype.from_yaml(content)
        return parse_genotype(content)
    raise ValueError(
        f"unknown genotype {text!r}: not a built-in name {sorted(BUILTIN_GENOTYPES)}, "
        "an existing file, or a 'Genotype(...)' string"
    )
