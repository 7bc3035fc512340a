"""IVR menus: the compiled, immutable tree of a menu and the texts it shows (no database).

``queries.bot`` compiles the workspace's enabled menus with its rules; ``services.answer`` walks them
with the member's session (docs/menus.md, ADR 0014).

Inputs, after normalisation (``matching.normalize``: full-width ``１`` is ``1``):

* a menu's **trigger** (exact, e.g. ``菜单``) opens it at its top level, whatever the session;
* while a session is open: **digits** choose an option of the current level, ``*`` (or ``返回``) goes
  back one level, ``#`` (or ``主菜单``) returns to the top level;
* anything else is not a menu input: the rules answer it and the session stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from .matching import normalize

BACK = frozenset({"*", "返回", "返回上一级", "back"})
HOME = frozenset({"#", "主菜单", "home"})
MAX_KEY_DIGITS = 2


def is_choice(s: str) -> bool:
    """Whether the normalised text ``s`` is an option key (1–2 ASCII digits)."""
    return 0 < len(s) <= MAX_KEY_DIGITS and s.isascii() and s.isdigit()


def is_navigation(s: str) -> bool:
    """Whether the normalised text ``s`` is a menu input other than a trigger (a key, back or home)."""
    return is_choice(s) or s in BACK or s in HOME


@dataclass(eq=False)
class Node:
    id: int
    key: str
    label: str
    action: str
    text: str
    live: str
    parent_id: int | None
    children: dict[str, Node] = field(default_factory=dict)


@dataclass(eq=False)
class CompiledMenu:
    id: int
    name: str
    triggers: frozenset[str]
    prompt: str
    handoff_text: str
    timeout_seconds: int
    top: dict[str, Node]
    nodes: dict[int, Node]

    def options(self, node: Node | None) -> dict[str, Node]:
        """The options of ``node`` (a submenu), or of the top level when None."""
        return self.top if node is None else node.children

    def parent(self, node: Node | None) -> Node | None:
        if node is None or node.parent_id is None:
            return None
        return self.nodes.get(node.parent_id)

    def listing(self, node: Node | None) -> str:
        """The text that shows a level: its header, one line per option, and how to go back."""
        header = self.prompt if node is None else (node.text or node.label)
        lines = [header.strip()] if header.strip() else []
        options = self.options(node)
        lines.extend(f"{key}. {opt.label}" for key, opt in sorted(options.items(), key=lambda kv: _key_order(kv[0])))
        if node is not None:
            lines.append(_("Reply * to go back, # for the main menu."))
        return "\n".join(lines)


def _key_order(key: str) -> tuple[int, int, str]:
    # 1…9 first, then 10…99, then 0 last (as a phone keypad reads: "0 for an operator").
    return (1 if key == "0" else 0, len(key), key)


@dataclass(frozen=True)
class MenuSpec:
    id: int
    name: str
    triggers: list[str]
    prompt: str
    handoff_text: str
    timeout_seconds: int


@dataclass(frozen=True)
class NodeSpec:
    id: int
    menu_id: int
    parent_id: int | None
    key: str
    label: str
    action: str
    text: str
    live: str


def compile_menus(menus: Iterable[MenuSpec], nodes: Iterable[NodeSpec]) -> list[CompiledMenu]:
    """The menus with their trees. Nodes whose parent is missing (or not a submenu) are left out."""
    by_menu: dict[int, list[NodeSpec]] = {}
    for n in nodes:
        by_menu.setdefault(n.menu_id, []).append(n)
    out = []
    for m in menus:
        compiled = {n.id: Node(n.id, n.key, n.label, n.action, n.text, n.live, n.parent_id)
                    for n in by_menu.get(m.id, [])}
        top: dict[str, Node] = {}
        for node in compiled.values():
            if node.parent_id is None:
                top[node.key] = node
            else:
                parent = compiled.get(node.parent_id)
                if parent is not None:
                    parent.children[node.key] = node
        out.append(CompiledMenu(id=m.id, name=m.name, triggers=frozenset(t for t in (normalize(x) for x in m.triggers) if t),
                                prompt=m.prompt, handoff_text=m.handoff_text, timeout_seconds=m.timeout_seconds,
                                top=top, nodes=compiled))
    return out


def trigger_index(menus: Iterable[CompiledMenu]) -> Mapping[str, CompiledMenu]:
    """Normalised trigger → menu (the first menu by name wins a trigger two menus share)."""
    index: dict[str, CompiledMenu] = {}
    for menu in menus:
        for t in menu.triggers:
            index.setdefault(t, menu)
    return index
