"""README.md's examples work as written.

Every ```python block runs in a fresh namespace, in a temporary working folder, on the shipped models. A block that
needs a GPU or a hub download says so on its first line (``# needs: GPU, hub download``); it is compiled and every
``hiresdiff`` name it uses must exist. Every command line of the ```bash blocks after the first (the install and
test commands, which ``.ci/run`` runs) is parsed by the CLI's own parser, and the README's links resolve.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
from markers import needs_spandrel

import hiresdiff
from hiresdiff.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NEEDS = re.compile(r"^#\s*needs:\s*(?P<what>.+)$")
KNOWN_NEEDS = {"GPU", "hub download", "sr extra"}


def code_blocks(language: str, path: Path = README) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```language block of ``path``."""
    text = path.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)
    ]


def needs(code: str) -> set[str]:
    """What a block's first line says it needs (``# needs: GPU, hub download``), empty when it runs anywhere."""
    match = NEEDS.match(code.splitlines()[0].strip()) if code.strip() else None
    return {part.strip() for part in match.group("what").split(",")} if match else set()


PYTHON_BLOCKS = code_blocks("python")
RUNNABLE = [(line, code) for line, code in PYTHON_BLOCKS if not needs(code)]
MARKED = [(line, code) for line, code in PYTHON_BLOCKS if needs(code)]


def test_the_readme_has_examples_to_run():
    assert len(RUNNABLE) >= 4, f"only {len(RUNNABLE)} runnable ```python blocks in README.md"
    for line, code in MARKED:
        assert needs(code) <= KNOWN_NEEDS, f"README.md:{line}: unknown '# needs:' {needs(code) - KNOWN_NEEDS}"


@pytest.mark.parametrize("line, code", RUNNABLE, ids=[f"README.md:{line}" for line, _ in RUNNABLE])
def test_python_example_runs_as_written(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the example writes land here
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_{line}"})


SR_BLOCKS = [(line, code) for line, code in MARKED if needs(code) == {"sr extra"}]


@needs_spandrel
@pytest.mark.parametrize("line, code", SR_BLOCKS, ids=[f"README.md:{line}" for line, _ in SR_BLOCKS])
def test_sr_example_runs_as_written(line, code, tmp_path, monkeypatch):
    test_python_example_runs_as_written(line, code, tmp_path, monkeypatch)


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else ``None``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def resolve(name: str):
    """The object ``hiresdiff.x.y`` names: attributes of the imported package, importing submodules on the way."""
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))  # a submodule not imported yet
    return obj


def hiresdiff_names(tree: ast.AST) -> set[str]:
    """Every ``hiresdiff…`` name a block uses: its attribute chains on ``hiresdiff`` (or an alias of it) and the
    names it imports from ``hiresdiff`` modules."""
    aliases = {"hiresdiff": "hiresdiff"}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hiresdiff":
                    names.add(alias.name)
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "hiresdiff"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hiresdiff":
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for node in ast.walk(tree):
        chain = dotted(node) if isinstance(node, ast.Attribute) else None
        if chain and chain.split(".")[0] in aliases:
            root, _, rest = chain.partition(".")
            names.add(f"{aliases[root]}.{rest}")
    return names


@pytest.mark.parametrize("line, code", MARKED, ids=[f"README.md:{line}" for line, _ in MARKED])
def test_marked_example_compiles_and_names_real_api(line, code):
    tree = ast.parse(code, filename=f"README.md:{line}")
    names = hiresdiff_names(tree)
    assert names, f"README.md:{line} uses nothing from hiresdiff"
    missing = []
    for name in sorted(names):
        try:
            resolve(name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, f"README.md:{line} names what hiresdiff does not have: {missing}"


def hiresdiff_commands() -> list[tuple[int, list[str]]]:
    """(line, argv after ``hiresdiff``) of every hiresdiff command in the ```bash blocks after the first: plain,
    ``python -m hiresdiff`` and ``accelerate launch … -m hiresdiff``; a line may chain commands with ``&&``."""
    commands = []
    for start, code in code_blocks("bash")[1:]:
        for offset, text in enumerate(code.splitlines(), start=1):
            words = shlex.split(text, comments=True)
            segments, current = [], []
            for word in [*words, "&&"]:
                if word in ("&&", "||", ";"):
                    segments.append(current)
                    current = []
                else:
                    current.append(word)
            for command in segments:
                if command[:1] == ["hiresdiff"]:
                    commands.append((start + offset, command[1:]))
                elif "-m" in command and command[command.index("-m") + 1 :][:1] == ["hiresdiff"]:
                    commands.append((start + offset, command[command.index("-m") + 2 :]))
    return commands


COMMANDS = hiresdiff_commands()


def test_the_readme_has_command_lines():
    used = {argv[0] for _, argv in COMMANDS}
    assert {"generate", "upscale", "batch", "plan", "ui"} <= used, f"README.md shows only {sorted(used)}"


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"README.md:{line}:{argv[0]}" for line, argv in COMMANDS])
def test_command_line_example_parses(line, argv):
    try:
        args = build_parser(argv[0]).parse_args(argv)
    except SystemExit as exit:
        pytest.fail(f"README.md:{line}: `hiresdiff {shlex.join(argv)}` does not parse (exit {exit.code})")
    assert args.command == argv[0]


def test_command_line_examples_write_their_own_files():
    """The set-up command has written hiresdiff-grid.png and the CLI refuses to overwrite without --force: every
    generate/upscale example names its own --out, each a different file."""
    outs = {}
    for line, argv in COMMANDS:
        if argv[0] in ("generate", "upscale"):
            args = build_parser(argv[0]).parse_args(argv)
            assert args.out, f"README.md:{line}: `hiresdiff {argv[0]}` without --out"
            assert not args.force, f"README.md:{line}: an example should not need --force"
            assert args.out != "hiresdiff-grid.png" and args.out not in outs, (
                f"README.md:{line}: --out {args.out} is written by another example (README.md:{outs.get(args.out)})"
            )
            outs[args.out] = line


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        assert target.exists(), f"README.md links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"README.md links to {link}: no such heading"


def test_readme_names_only_public_api_that_exists():
    """``hiresdiff.X`` in the prose and inline code, too (the runnable blocks check theirs by running)."""
    for name in sorted(set(re.findall(r"\bhiresdiff\.([A-Za-z_]\w*)\(", README.read_text()))):
        assert hasattr(hiresdiff, name), f"README.md calls hiresdiff.{name}, which hiresdiff does not have"


def layout_rows() -> list[tuple[list[str], list[str]]]:
    """(names in the first column, ``*.py`` names in the second) of each row of the README's layout table."""
    text = README.read_text()
    section = text[text.index("## Layout") :]
    rows = []
    for row in re.findall(r"^\| (`.+?) \| (.+) \|$", section, flags=re.M):
        rows.append((re.findall(r"`([\w./]+)`", row[0]), re.findall(r"`(\w+\.py)`", row[1])))
    return rows


def test_layout_names_what_the_package_has():
    package = Path(hiresdiff.__file__).parent
    rows = layout_rows()
    assert rows, "README.md has no layout table"
    named = set()
    for packages, files in rows:
        for name in packages:
            assert (package / name).exists(), f"README.md's layout names hiresdiff/{name}, which does not exist"
            named.add(name.rstrip("/"))
        folders = [package / name for name in packages if name.endswith("/")]
        for file in files:
            assert any((folder / file).is_file() for folder in folders), (
                f"README.md's layout names {file} under {', '.join(packages)}, where it is not"
            )
    present = {
        path.name
        for path in package.iterdir()
        if (path.is_dir() and (path / "__init__.py").is_file()) or path.suffix == ".py"
    }
    unnamed = sorted(present - named - {"__init__.py", "__main__.py"})
    assert not unnamed, f"README.md's layout does not name {unnamed}"
