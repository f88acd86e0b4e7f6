"""The flat code bundle written into every saved checkpoint, so it loads with ``trust_remote_code=True`` where only
transformers and torch are installed.

``write_code_bundle(save_directory)`` generates the bundle from the package sources: each bundle file is the
concatenation of some package modules, with

* imports between modules of the same file removed and imports of another bundle file turned into ``from .x import``
  (the only imports between bundle files);
* imports of package modules outside the bundle allowed only inside ``try:`` (rewritten to absolute
  ``modeling_mambavl`` imports, which transformers' import check skips), or replaced by a registered fallback: the
  package's fast ``selective_scan`` when it is installed, else the bundle's portable reference scan;
* a few functions replaced by their bundle versions (saving a model that was loaded from a bundle copies the bundle
  files it came with).

File names never shadow the package (``configuration_mambavl.py``, ``modeling_mamba_vl.py``,
``selective_scan_mambavl.py``, ``video_processing_mambavl.py``, ``processing_mambavl.py``, ``pipeline_mambavl.py``).
More files are added with
``register_bundle_file``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "modeling_mambavl"


class BundleError(RuntimeError):
    """The package sources cannot be flattened into a self-contained bundle (names the module and line)."""


@dataclass(frozen=True)
class BundleFile:
    """One flat file of the bundle.

    Attributes:
        filename: file name in the checkpoint folder; must not be the name of a package module.
        modules: package modules (relative to ``modeling_mambavl``) concatenated in this order.
        auto_map: transformers Auto class -> class defined in this file (written to ``config.json``'s ``auto_map``).
        overrides: top-level function name -> function of this module whose source replaces it in the bundle.
        extras: functions of this module appended to the file (renamed to drop a leading ``_bundle``).
    """

    filename: str
    modules: tuple[str, ...]
    auto_map: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Callable] = field(default_factory=dict)
    extras: tuple[Callable, ...] = ()

    @property
    def stem(self) -> str:
        return self.filename[: -len(".py")]


# ---------------------------------------------------------------------------------------------------------------------
# Functions whose source goes into the bundle. They must be self-contained (imports inside the body).


def _bundle_write_code_bundle(save_directory):
    """Copy this checkpoint's code files next to the saved config; return the auto_map of the bundle files present.

    transformers caches each remote-code entry point in its own folder: the config's folder holds only its own file,
    while `save_pretrained` of a model loaded from a bundle has already copied the model file and its imports (the
    whole bundle) into `save_directory`.
    """
    import os
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    auto_map = {}
    for filename, classes in _BUNDLE_MANIFEST.items():  # noqa: F821 (defined in the bundle file)
        source, target = os.path.join(here, filename), os.path.join(save_directory, filename)
        if os.path.isfile(source) and os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source, target)
        if os.path.isfile(target):
            auto_map.update({auto_class: f"{filename[:-3]}.{name}" for auto_class, name in classes.items()})
    return auto_map


def _bundle_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, backend="auto", initial_state=None):
    """mamba-ssm ``selective_scan_fn`` semantics, plus an optional initial state (see ``selective_scan_reference``).
    This portable copy has one path; ``backend`` is accepted for signature compatibility."""
    return selective_scan_reference(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,  # noqa: F821 (bundle)
                                    delta_softplus=delta_softplus, return_last_state=return_last_state,
                                    initial_state=initial_state)


def _bundle_selective_scan_backward(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                    backend="auto", initial_state=None, dlast=None):
    """``selective_scan_backward``'s portable copy: (out, the gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias,
    dinitial_state), None for absent inputs) from the reference scan's forward with autograd and its backward."""
    leaves = [None if t is None else t.detach().requires_grad_()
              for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
    with torch.enable_grad():  # noqa: F821 (bundle)
        out, last = selective_scan_reference(*leaves[:8], delta_softplus=delta_softplus,  # noqa: F821 (bundle)
                                             return_last_state=True, initial_state=leaves[8])
    outputs, grad_outputs = ([out, last], [dout, dlast]) if dlast is not None else ([out], [dout])
    present = [t for t in leaves if t is not None]
    found = iter(torch.autograd.grad(outputs, present, grad_outputs, allow_unused=True,  # noqa: F821 (bundle)
                                     materialize_grads=True))
    return out.detach(), tuple(None if t is None else next(found) for t in leaves)


# Relative imports of package modules that are not bundled, replaced by "the package's version if installed, else the
# bundle's": module -> bundle file providing the same names.
_FALLBACKS = {f"{PACKAGE}.ops": "selective_scan_mambavl"}

BUNDLE_FILES: list[BundleFile] = [
    BundleFile(
        "configuration_mambavl.py",
        ("configuration.presets", "configuration.configuration_mambavl"),
        auto_map={"AutoConfig": "MambaVLConfig"},
        overrides={"save_code_bundle": _bundle_write_code_bundle},
    ),
    BundleFile("selective_scan_mambavl.py", ("ops.reference",),
               extras=(_bundle_selective_scan, _bundle_selective_scan_backward)),
    BundleFile(
        "modeling_mamba_vl.py",
        ("mixer", "fusion", "vision", "questions", "modeling"),
        auto_map={"AutoModel": "MambaVLModel", "AutoModelForVideoClassification": "MambaVLForVideoClassification"},
    ),
    BundleFile(
        "video_processing_mambavl.py",
        ("processors.sampling", "processors.video_io", "processors.video_processing"),
        auto_map={"AutoVideoProcessor": "MambaVLVideoProcessor"},
    ),
    # The question tokenizer is data (tokenizer.json, saved with the processor), not code.
    BundleFile("processing_mambavl.py", ("processors.processing",), auto_map={"AutoProcessor": "MambaVLProcessor"}),
    # Named in config.json's custom_pipelines (see configuration_mambavl.CUSTOM_PIPELINES), not in auto_map.
    BundleFile("pipeline_mambavl.py", ("pipelines",)),
]
# The file that carries the manifest (read by the bundle's own save_code_bundle).
_MANIFEST_FILE = "configuration_mambavl.py"


def register_bundle_file(bundle_file: BundleFile) -> None:
    """Add (or replace, by file name) a bundle file, e.g. ``processing_mambavl.py`` for the processor."""
    if bundle_file.filename == f"{PACKAGE}.py" or not bundle_file.filename.endswith(".py"):
        raise BundleError(f"bundle file name {bundle_file.filename!r} must end in .py and not shadow {PACKAGE}")
    BUNDLE_FILES[:] = [f for f in BUNDLE_FILES if f.filename != bundle_file.filename] + [bundle_file]


# ---------------------------------------------------------------------------------------------------------------------
# Generation


def _module_source(module: str) -> tuple[str, str, bool]:
    """(full module name, source text, whether it is a package ``__init__``) of a package module."""
    full = f"{PACKAGE}.{module}"
    spec = importlib.util.find_spec(full)
    if spec is None or spec.origin is None:
        raise BundleError(f"bundle: package module {full} not found")
    origin = Path(spec.origin)
    return full, origin.read_text(encoding="utf-8"), origin.name == "__init__.py"


def _resolve_relative(module: str, level: int, target: str | None, is_package: bool) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _defining_module(target: str, name: str) -> str:
    """The module that defines ``name`` imported from ``target`` (a package re-exports names of its modules)."""
    mod = importlib.import_module(target)
    if not hasattr(mod, "__path__"):
        return target
    if importlib.util.find_spec(f"{target}.{name}") is not None:
        return f"{target}.{name}"
    obj = getattr(mod, name, None)
    return getattr(obj, "__module__", target) or target


def _inside_try(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            return True
    return False


class _Flattener:
    def __init__(self, files: list[BundleFile]) -> None:
        self.files = files
        self.file_of: dict[str, str] = {}
        for f in files:
            for m in f.modules:
                self.file_of[f"{PACKAGE}.{m}"] = f.stem

    def _file_for(self, target: str, names: list[str]) -> str | None:
        stems = {self.file_of.get(_defining_module(target, n)) for n in names}
        if len(stems) != 1:
            raise BundleError(f"bundle: names {names} imported from {target} live in different bundle files {stems}")
        return stems.pop()

    def flatten(self, bundle_file: BundleFile) -> str:
        header_imports: list[str] = []
        bodies: list[str] = []
        defined: dict[str, str] = {}
        future = set()
        for module in bundle_file.modules:
            full, source, is_package = _module_source(module)
            tree = ast.parse(source)
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            lines = source.splitlines()
            edits: list[tuple[int, int, str]] = []  # (first line, last line) 1-based inclusive -> replacement

            future.add(any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body))
            if len(future) > 1:
                raise BundleError(f"bundle {bundle_file.filename}: modules disagree on `from __future__ import "
                                  f"annotations` ({full}); it would change the others' annotations")

            def span(node: ast.AST) -> tuple[int, int]:
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                return first, node.end_lineno

            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names = [node.name]
                elif isinstance(node, ast.Assign):
                    names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                else:
                    names = []
                for name in names:
                    if name == "__all__":
                        continue
                    if name in defined and defined[name] != full:
                        raise BundleError(f"bundle {bundle_file.filename}: top-level name {name!r} is defined in both "
                                          f"{defined[name]} and {full}; rename one (the bundle is one namespace)")
                    defined[name] = full

            overridden = [span(n) for n in tree.body
                          if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in bundle_file.overrides]
            for node in ast.walk(tree):
                top = node in tree.body
                if not top and any(f <= getattr(node, "lineno", 0) <= last for f, last in overridden):
                    continue  # replaced wholesale
                if top and isinstance(node, ast.Expr) and node is tree.body[0] and isinstance(
                        getattr(node, "value", None), ast.Constant) and isinstance(node.value.value, str):
                    edits.append((*span(node), ""))  # module docstring
                elif top and isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                    edits.append((*span(node), ""))
                elif top and isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in bundle_file.overrides:
                    replacement = inspect.getsource(bundle_file.overrides[node.name])
                    replacement = re.sub(r"^def \w+\(", f"def {node.name}(", textwrap.dedent(replacement), count=1)
                    edits.append((*span(node), replacement.rstrip("\n")))
                elif isinstance(node, ast.Import) and top:
                    header_imports.append(ast.unparse(node))
                    edits.append((*span(node), ""))
                elif isinstance(node, ast.ImportFrom):
                    edit = self._import_edit(bundle_file, full, is_package, node, top, parents, lines)
                    if edit is not None:
                        if edit[0] == "header":
                            header_imports.append(edit[1])
                            edits.append((*span(node), ""))
                        else:
                            edits.append((*span(node), edit[1]))
            for first, last, replacement in sorted(edits, reverse=True):
                if any(f <= last and first <= l_ for f, l_, _ in edits if (f, l_) != (first, last)):
                    raise BundleError(f"bundle: overlapping edits in {full} at lines {first}-{last}")
                lines[first - 1: last] = replacement.splitlines() if replacement else []
            bodies.append(f"# ---- from {full}\n" + "\n".join(lines).strip("\n"))

        if bundle_file.filename == _MANIFEST_FILE:
            manifest = {f.filename: dict(f.auto_map) for f in self.files}
            bodies.append(f"# The files of this bundle and the classes they give to the Auto classes.\n"
                          f"_BUNDLE_MANIFEST = {manifest!r}")
        for extra in bundle_file.extras:
            source = textwrap.dedent(inspect.getsource(extra))
            bodies.append(re.sub(r"^def _bundle_(\w+)\(", r"def \1(", source, count=1).rstrip("\n"))

        seen, imports = set(), []
        if future == {True}:
            imports.append("from __future__ import annotations")
        for line in header_imports:
            if line not in seen and not line.startswith("from __future__"):
                seen.add(line)
                imports.append(line)
        header = (
            f'"""Generated by {PACKAGE}.remote_code.write_code_bundle from the mambavl package sources:\n'
            f"{', '.join(bundle_file.modules)}.\n\n"
            "A flat copy of the package code so this checkpoint loads with trust_remote_code=True where only\n"
            "transformers and torch are installed. Do not edit: regenerate with save_pretrained.\n"
            '"""'
        )
        text = "\n\n".join([header, "\n".join(imports)] + bodies) + "\n"
        text = re.sub(r"\n{4,}", "\n\n\n", text)
        try:
            compile(text, bundle_file.filename, "exec")
        except SyntaxError as e:
            raise BundleError(f"bundle {bundle_file.filename}: generated code does not compile ({e})") from e
        return text

    def _import_edit(self, bundle_file, full, is_package, node, top, parents, lines):
        """None (keep), ("header", import line) (hoist) or ("inline", replacement text)."""
        indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
        names = [a.name for a in node.names]
        aliases = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
        if node.level == 0:
            if node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                if not _inside_try(node, parents):
                    raise BundleError(f"{full}, line {node.lineno}: absolute import of {node.module} outside try:")
                return None
            return ("header", ast.unparse(node)) if top else None
        target = _resolve_relative(full, node.level, node.module, is_package)
        stem = self._file_for(target, names) if target in self.file_of or self._is_bundled_package(target, names) \
            else None
        if stem == bundle_file.stem:
            return "inline", ""
        if stem is not None:
            line = f"from .{stem} import {aliases}"
            return ("header", line) if top else ("inline", indent + line)
        if target in _FALLBACKS:
            block = (f"try:  # the package's fast kernels when it is installed\n"
                     f"    from {target} import {aliases}\n"
                     f"except ImportError:\n"
                     f"    from .{_FALLBACKS[target]} import {aliases}")
            return "inline", textwrap.indent(block, indent)
        if _inside_try(node, parents):
            return "inline", f"{indent}from {target} import {aliases}"
        raise BundleError(
            f"{full}, line {node.lineno}: imports {target}, which is not in the code bundle; import it inside try: "
            "(with an ImportError fallback) or add it to a bundle file"
        )

    def _is_bundled_package(self, target: str, names: list[str]) -> bool:
        try:
            return all(_defining_module(target, n) in self.file_of for n in names)
        except ImportError:
            return False


def generate_code_bundle(files: list[BundleFile] | None = None) -> dict[str, str]:
    """The bundle's files: file name -> source text, generated from the installed package sources."""
    files = BUNDLE_FILES if files is None else files
    flattener = _Flattener(files)
    return {f.filename: flattener.flatten(f) for f in files}


def write_code_bundle(save_directory: str | os.PathLike) -> dict[str, str]:
    """Write the bundle files into ``save_directory``; return the ``auto_map`` (Auto class -> ``file.Class``)."""
    os.makedirs(save_directory, exist_ok=True)
    auto_map: dict[str, str] = {}
    for bundle_file in BUNDLE_FILES:
        if bundle_file.filename == f"{PACKAGE}.py":
            raise BundleError(f"bundle file {bundle_file.filename} would shadow the {PACKAGE} package")
    for filename, text in generate_code_bundle().items():
        Path(save_directory, filename).write_text(text, encoding="utf-8")
    for bundle_file in BUNDLE_FILES:
        auto_map.update({auto: f"{bundle_file.stem}.{name}" for auto, name in bundle_file.auto_map.items()})
    return auto_map


__all__ = ["BundleFile", "BundleError", "BUNDLE_FILES", "generate_code_bundle", "register_bundle_file",
           "write_code_bundle"]
