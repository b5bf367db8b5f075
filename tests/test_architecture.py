"""The house rules of the layout (docs/architecture.md, "Layers"), read from the source with ``ast``: no import cycle
between modules, imports that run only downward between packages, no diffusers in the math, no training code in the
runtime; and a run that leaves the caller's pipeline as it found it."""

import ast
from pathlib import Path

import pytest
import torch
from tiny_pipelines import load

import hiresdiff
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.recipe import Recipe

PACKAGE = Path(hiresdiff.__file__).parent

#: Each package's (or top-level module's) layer: a module may import its own layer and those below, never above.
LAYERS = {
    "checks": 0,
    "defaults": 0,
    "core": 1,
    "methods": 2,
    "recipe": 3,
    "models": 3,
    "denoisers": 4,
    "hooks": 5,
    "unet": 6,
    "transformer": 6,
    "sampling": 7,
    "loading": 8,
    "cost": 9,
    "eval": 9,
    "data": 9,
    "image_upscale": 9,
    "comparison": 9,
    "options": 9,
    "batch": 9,
    "grid": 9,
    "ui": 9,
    "training": 10,
    "cli": 11,
    "__init__": 12,
    "__main__": 12,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("hiresdiff", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside functions
    (``from a import b`` counts as ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def own_imports() -> dict[str, set[str]]:
    found = modules()
    return {
        name: {other for other in imports(path) if other in found and other != name} for name, path in found.items()
    }


def layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    assert top in LAYERS, f"{module}: its package {top!r} has no layer in LAYERS (and docs/architecture.md)"
    return top, LAYERS[top]


def test_every_package_has_a_layer():
    for name in modules():
        layer(name)


def test_the_import_graph_of_the_package_has_no_cycle():
    graph = own_imports()
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for other in sorted(graph[node]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join([*path, other])}"
            if other not in state:
                visit(other, [*path, other])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_run_only_downward_between_packages():
    upward = []
    for name, others in own_imports().items():
        package, rank = layer(name)
        for other in others:
            other_package, other_rank = layer(other)
            if other_package != package and other_rank >= rank and not (other_rank == rank and rank == 9):
                upward.append(f"{name} -> {other}")
    assert not upward, "imports that run sideways or upward:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("package", ["core", "methods"])
def test_the_math_imports_no_diffusers_and_nothing_above_it(package):
    for name, path in modules().items():
        if name.split(".")[1:2] != [package]:
            continue
        for other in imports(path):
            assert other.split(".")[0] != "diffusers", f"{name} imports {other}"
            if other.startswith("hiresdiff."):
                assert other.split(".")[1] in {"core", "methods", "checks"}, f"{name} imports {other}"


def test_nothing_in_the_runtime_imports_training_code():
    for name, path in modules().items():
        if name.startswith("hiresdiff.training"):
            continue
        assert not [other for other in imports(path) if other.startswith("hiresdiff.training")], name


def attributes(pipe) -> dict:
    """The instance attributes of a pipeline and of each of its components, with their values' identities."""
    state = {"pipe": {k: id(v) for k, v in vars(pipe).items()}}
    for name, part in pipe.components.items():
        if hasattr(part, "__dict__"):
            state[name] = {k: id(v) for k, v in vars(part).items()}
            if isinstance(part, torch.nn.Module):
                for path, module in part.named_modules():
                    state[f"{name}.{path}"] = {k: id(v) for k, v in vars(module).items()}
    return state


@pytest.mark.parametrize(
    "kind, recipe",
    [("sd15", "freescale+ug"), ("sd15", "self-cascade"), ("flux", "freescale+ug"), ("pixel", "freescale+ug")],
)
def test_generate_leaves_no_attribute_on_the_pipeline_or_its_parts(kind, recipe):
    pipe = load(kind)
    if kind == "pixel":
        pipe = PixelPipeline(pipe.unet, pipe.scheduler)
    before = attributes(pipe)
    size = 64 if kind != "flux" else 32
    call = {} if kind == "pixel" else {"prompt": "a cat"}
    steps = 4 if kind == "flux" else 2  # a flow model's later stages run int(steps·0.3): 4 steps leave them one
    hiresdiff.generate(
        pipe, height=size, width=size, recipe=Recipe.preset(recipe), steps=steps, output_type="pt", **call
    )
    assert attributes(pipe) == before
