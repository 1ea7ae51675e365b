"""The package's shape, read from its files: no import circle, no module over 600 lines, no `sys.path` edit outside
the tests, the files a saved model folder carries import only each other, and `llm-srt --help` loads no model code."""

import ast
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "llm_srt")
MAX_LINES = 600


def python_files(*folders: str) -> list[str]:
    found = []
    for folder in folders:
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            found += [os.path.join(directory, name) for name in names if name.endswith(".py")]
    return sorted(found)


def module_name(path: str) -> str:
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return os.path.isfile(os.path.join(ROOT, *name.split("."), "__init__.py"))


def known(name: str) -> bool:
    return is_package(name) or os.path.isfile(os.path.join(ROOT, *name.split(".")) + ".py")


def imported_modules(path: str) -> set[str]:
    """The llm_srt modules `path` imports anywhere in it (at the top or inside functions): `from x import y` counts
    as importing the submodule `x.y` when there is one, else `x`."""
    name = module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "llm_srt"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llm_srt":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if known(f"{target}.{alias.name}") else target)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {module_name(path): imported_modules(path) for path in python_files("llm_srt")}
    unknown = {(module, target) for module, targets in graph.items() for target in targets if target not in graph}
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module, or a module importing itself."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}}) == [["a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40  # the walk saw the package
    assert circles(graph) == []


def test_no_module_is_over_600_lines():
    long = {os.path.relpath(path, ROOT): lines for path in python_files("llm_srt", "trainer_scripts", "benchmarks")
            if (lines := len(open(path, encoding="utf-8").read().splitlines())) > MAX_LINES}
    assert long == {}


def test_only_tests_edit_sys_path():
    edits = [os.path.relpath(path, ROOT) for path in python_files("llm_srt", "trainer_scripts", "benchmarks",
                                                                    "model_cards")
             if "sys.path" in open(path, encoding="utf-8").read()]
    assert edits == []


def test_trainer_scripts_are_thin_entry_points():
    for path in python_files("trainer_scripts"):
        tree = ast.parse(open(path, encoding="utf-8").read())
        functions = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert functions == [], (path, functions)


def test_the_files_a_saved_folder_carries_import_only_each_other():
    """A saved model folder holds the `*_llm_srt.py` files and loads where this package is not installed: they may
    import each other (relatively) but nothing else of the package."""
    hub = {module_name(path) for path in python_files("llm_srt") if os.path.dirname(path) == PACKAGE
           and path.endswith("_llm_srt.py")}
    assert {"llm_srt.modeling_llm_srt", "llm_srt.pipeline_llm_srt", "llm_srt.processing_llm_srt"} <= hub
    graph = import_graph()
    for module in sorted(hub):
        assert graph[module] <= hub, (module, sorted(graph[module] - hub))
        source = open(os.path.join(ROOT, *module.split(".")) + ".py", encoding="utf-8").read()
        assert "from llm_srt" not in source and "import llm_srt" not in source, module


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["translate", "--help"], ["languages"]])
def test_the_command_starts_without_loading_torch_or_transformers(argv):
    code = ("import sys\nfrom llm_srt.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "loaded = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
            "print('LOADED', loaded, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in run.stderr, run.stderr[-2000:]
    assert run.stdout.strip()
