"""Instruction data for the pool's five domains, from sources every fresh machine of this kind has offline.

Each domain is a pure function of a seed (and of files that ship with Python, Debian or a pinned PyPI
package) returning a list of :class:`Example`. Sources (see docs/pool.md):

- ``math``: arithmetic word problems generated here, with worked answers;
- ``code``: functions from Python's own standard library source (their docstring asks, their code answers);
- ``legal``: Debian's license texts (``/usr/share/common-licenses``) and Python's LICENSE.txt;
- ``medical``: ICD-10-CM code descriptions from the ``simple-icd-10-cm`` package;
- ``chemistry``: element data and formula masses from the ``periodictable`` package.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections.abc import Callable
from pathlib import Path

from hubdelta.embedder.training import Example
from hubdelta.kernel.errors import MissingDependencyError
from hubdelta_dev.errors import PoolError

LICENSE_DIR = Path("/usr/share/common-licenses")


# --- math -------------------------------------------------------------------------------------------------

_NAMES = ["Ada", "Bilal", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemi", "Luca"]
_ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "pencils",
    "cookies",
    "stamps",
    "shells",
    "coins",
    "cards",
]


def _math_problem(rng: random.Random) -> Example:
    name, other = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    a, b, c = rng.randint(12, 95), rng.randint(2, 9), rng.randint(3, 40)
    kind = rng.randrange(4)
    if kind == 0:
        q = f"{name} has {a} {item}. {other} gives {name} {b} bags with {c} {item} each. How many {item} now?"
        steps = [f"{b} bags × {c} = {b * c} {item}.", f"{a} + {b * c} = {a + b * c}."]
        ans = a + b * c
    elif kind == 1:
        total = a * b
        q = (
            f"{name} shares {total} {item} equally among {b} friends, then each friend eats {min(c, a)}. "
            f"How many {item} does each friend keep?"
        )
        steps = [f"{total} ÷ {b} = {a} each.", f"{a} − {min(c, a)} = {a - min(c, a)}."]
        ans = a - min(c, a)
    elif kind == 2:
        q = f"A box holds {c} {item}. {name} fills {b} boxes and has {a} {item} left over. How many {item} were there?"
        steps = [f"{b} × {c} = {b * c}.", f"{b * c} + {a} = {b * c + a}."]
        ans = b * c + a
    else:
        price = rng.randint(2, 15)
        q = f"{name} buys {b} {item} at ${price} each and pays with ${b * price + c}. How much change?"
        steps = [f"Cost: {b} × ${price} = ${b * price}.", f"Change: ${b * price + c} − ${b * price} = ${c}."]
        ans = c
    worked = " ".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    return Example("Solve the word problem. Show your steps.", q, f"{worked} Answer: {ans}")


def math_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(f"math-{seed}")
    return [_math_problem(rng) for _ in range(n)]


# --- code -------------------------------------------------------------------------------------------------

_CODE_MODULES = [
    "textwrap", "string", "shlex", "difflib", "heapq", "bisect", "fractions", "statistics", "calendar",
    "fnmatch", "posixpath", "colorsys", "base64", "html/__init__", "ipaddress", "functools", "random",
    "urllib/parse", "json/encoder", "json/decoder", "csv", "glob", "gettext", "locale", "quopri", "uu",
    "tokenize", "inspect", "copy", "pprint", "reprlib", "keyword", "operator", "contextlib", "dataclasses",
    "enum", "shutil", "tempfile", "zipfile", "tarfile", "email/utils", "http/cookies", "ntpath",
    "genericpath",
]  # fmt: skip


def _stdlib_functions(max_chars: int) -> list[tuple[str, str, str]]:
    """(signature, first docstring paragraph, source without docstring) of short documented functions."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, str, str]] = []
    for mod in _CODE_MODULES:
        path = stdlib / f"{mod}.py"
        if not path.is_file():
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("__"):
                continue
            doc = ast.get_docstring(node)
            if not doc or not node.body[1:]:
                continue
            node.body = node.body[1:]  # the docstring is the question, not the answer
            code = ast.unparse(node)
            if len(code) > max_chars:
                continue
            args = ast.unparse(node.args)
            found.append((f"{node.name}({args})", doc.split("\n\n")[0].replace("\n", " ").strip(), code))
    return found


def code_examples(n: int, seed: int) -> list[Example]:
    funcs = _stdlib_functions(max_chars=420)
    rng = random.Random(f"code-{seed}")
    picked = rng.sample(funcs, min(n, len(funcs)))
    return [Example(f"Write the Python function `{sig}`.", doc, code) for sig, doc, code in picked]


# --- legal ------------------------------------------------------------------------------------------------


def _license_sentences() -> list[tuple[str, str]]:
    files = sorted(LICENSE_DIR.glob("*")) if LICENSE_DIR.is_dir() else []
    py_license = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    files += [py_license] if py_license.is_file() else []
    if not files:
        raise PoolError(f"no license texts in {LICENSE_DIR}", item="domain legal", fix="apt-get install base-files")
    out: list[tuple[str, str]] = []
    for f in files:
        if f.is_symlink() or not f.is_file():
            continue  # GPL -> GPL-3 and the like: count each text once
        text = " ".join(f.read_text(encoding="utf-8", errors="replace").split())
        sentences = [s for s in re.split(r"(?<=[.;:])\s+", text) if 40 <= len(s) <= 400]
        out += [(f.name, s) for s in sentences]
    return out


def legal_examples(n: int, seed: int) -> list[Example]:
    sentences = _license_sentences()
    rng = random.Random(f"legal-{seed}")
    examples = []
    for i in rng.sample(range(len(sentences) - 1), min(n, len(sentences) - 1)):
        (name, first), (_, second) = sentences[i], sentences[i + 1]
        examples.append(Example(f"Continue this clause of the {name} license.", first, second))
    return examples


# --- medical ----------------------------------------------------------------------------------------------


def medical_examples(n: int, seed: int) -> list[Example]:
    try:
        import simple_icd_10_cm as icd
    except ImportError as e:
        raise MissingDependencyError("simple-icd-10-cm", extra="pool") from e
    codes = [c for c in icd.get_all_codes(with_dots=True) if "." in c and icd.is_leaf(c)]
    rng = random.Random(f"medical-{seed}")
    examples = []
    for code in rng.sample(codes, n):
        desc, parent = icd.get_description(code), icd.get_parent(code)
        chapter_block = icd.get_ancestors(code)[-2]
        context = f"It is classified under {parent} ({icd.get_description(parent)}), block {chapter_block}."
        if rng.random() < 0.5:
            examples.append(Example("What does this ICD-10-CM code describe?", code, f"{code}: {desc}. {context}"))
        else:
            examples.append(Example("Give the ICD-10-CM code for this diagnosis.", desc, f"{code}. {context}"))
    return examples


# --- chemistry --------------------------------------------------------------------------------------------

_FORMULAS = [
    "H2O", "CO2", "NaCl", "H2SO4", "HNO3", "NH3", "CH4", "C2H6", "C2H5OH", "C6H12O6", "CaCO3", "KMnO4",
    "Fe2O3", "Al2O3", "MgCl2", "NaOH", "KOH", "HCl", "H3PO4", "C3H8", "SO2", "NO2", "CuSO4", "AgNO3", "ZnO",
    "BaSO4", "Na2CO3", "K2Cr2O7", "C12H22O11", "CH3COOH", "Ca(OH)2", "Mg(OH)2", "NH4Cl", "Li2CO3", "SiO2",
]  # fmt: skip


def chemistry_examples(n: int, seed: int) -> list[Example]:
    try:
        import periodictable as pt
    except ImportError as e:
        raise MissingDependencyError("periodictable", extra="pool") from e
    rng = random.Random(f"chemistry-{seed}")
    elements = [el for el in pt.elements if 1 <= el.number <= 86]
    examples = []
    for _ in range(n):
        if rng.random() < 0.5:
            el = rng.choice(elements)
            density = f", density {el.density} g/cm³" if el.density else ""
            answer = (
                f"{el.name.capitalize()} ({el.symbol}), atomic number {el.number}, "
                f"atomic mass {el.mass:.3f} u{density}."
            )
            examples.append(Example("Describe this chemical element.", el.symbol, answer))
        else:
            f = pt.formula(rng.choice(_FORMULAS))
            moles = rng.randint(1, 40) / 4
            parts = [f"{el.symbol}: {k} × {el.mass:.3f} = {k * el.mass:.3f}" for el, k in f.atoms.items()]
            answer = (
                "; ".join(parts) + f". Molar mass = {f.mass:.3f} g/mol. "
                f"{moles} mol × {f.mass:.3f} g/mol = {moles * f.mass:.2f} g."
            )
            examples.append(Example(f"How many grams are in {moles} mol of this compound?", str(f), answer))
    return examples


DOMAINS: dict[str, Callable[[int, int], list[Example]]] = {
    "math": math_examples,
    "code": code_examples,
    "legal": legal_examples,
    "medical": medical_examples,
    "chemistry": chemistry_examples,
}


def domain_examples(domain: str, n: int, seed: int) -> list[Example]:
    """Return ``n`` distinct examples of ``domain`` (deterministic for a seed)."""
    if domain not in DOMAINS:
        raise PoolError(f"unknown domain {domain!r}", item="recipe", fix=f"use one of {sorted(DOMAINS)}")
    # Sources repeat (86 elements, a few thousand license sentences): ask for more and keep the first
    # distinct questions, so that held-out and training splits never share one.
    seen: set[tuple[str, str]] = set()
    unique = []
    for ex in DOMAINS[domain](n * 2, seed):
        if (ex.instruction, ex.input) not in seen:
            seen.add((ex.instruction, ex.input))
            unique.append(ex)
    if len(unique) < n:
        raise PoolError(f"only {len(unique)} distinct examples, need {n}", item=f"domain {domain}")
    return unique[:n]
