"""Dependencies point down: every import in src/deeplab against the README's Layout table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "deeplab"


def allowed_imports() -> dict[str, set[str] | None]:
    """module -> the modules it may import, from the README's Layout table (None: any)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        row = re.match(r"\| `([a-z_]+)/?` \|[^|]*\|([^|]*)\|$", line)
        if row:
            cell = row.group(2).strip()
            table[row.group(1)] = (
                None
                if cell == "everything"
                else {name.strip() for name in cell.split(",") if name.strip()}
            )
    return table


def component(module: str) -> str | None:
    """The Layout row of a dotted ``deeplab...`` module name (None for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(path: Path) -> set[str]:
    """Every ``deeplab...`` module the file imports, inside functions too."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0]
        base = package
    else:
        base = package.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "deeplab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                name = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                name = node.module or ""
            if name.split(".")[0] == "deeplab":
                # `from deeplab import models` imports the module deeplab.models.
                found.update(f"{name}.{a.name}" if name == "deeplab" else name for a in node.names)
    return found


def test_the_layout_table_names_every_module() -> None:
    table = allowed_imports()
    here = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" and not p.name.startswith("__")) or (p / "__init__.py").is_file()
    }
    assert here == set(table), f"Layout table and src/deeplab differ: {here ^ set(table)}"
    for name, allowed in table.items():
        assert allowed is None or allowed <= set(table), f"{name} may import unknown {allowed}"


def test_every_import_points_down() -> None:
    table = allowed_imports()
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        own = component(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        if own is None or own in ("__init__", "__main__"):
            continue
        allowed = table[own]
        for module in sorted(imported_modules(path)):
            other = component(module)
            # The package root holds only the version and re-exports of the CRF.
            if other is None or other == own or other == "__version__":
                continue
            if allowed is not None and other not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "imports against the README's Layout table:\n" + "\n".join(wrong)
