"""``make mutate``: mutation testing of the rule modules with cosmic-ray.

    python -m tests.mutation.run [TARGET ...] [--fresh] [--report]

One cosmic-ray session per target (``TARGETS`` below: a module, or the lines
of several that hold one kind of rule), kept in ``.mutate/<target>.sqlite``,
so a run that is stopped goes on where it stopped. Each target has its own
narrow test command: the unit tests that exercise it, never the integration
suite (it starts servers; far too slow to run per mutant).

cosmic-ray is the engine (it finds the mutations, applies one, runs the tests
with a timeout, records the outcome); this script drives it:

* it mutates a copy of ``src/`` in ``.mutate/src`` (the tests import it
  through ``PYTHONPATH``), so a run killed half-way never leaves a mutated
  file in the work tree;
* it registers three operators of its own (``operators.py``) for the rule
  data cosmic-ray's operators cannot reach: the codecs' state tables and the
  state sets of ``core/decisions.py``;
* before running anything it sets aside, as "skipped", the mutants that are
  not worth a test run: those outside the target's scope, those that are
  not valid Python (cosmic-ray would count them as killed), those that only
  touch an annotation (never evaluated: every module here has ``from
  __future__ import annotations``), and the redundant operators of
  ``EXCLUDED_OPERATORS``;
* it re-runs the survivors when the tests changed since (a new test may kill
  them), and starts the target over when its source changed;
* it prints, per target, killed / survived / equivalent / timeouts / total and
  the score on non-equivalent mutants, and lists every survivor not argued
  equivalent in ``equivalent.toml`` (diffs in ``.mutate/<target>.survivors``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cosmic_ray.plugins
from cosmic_ray.commands.init import init as cr_init
from cosmic_ray.mutating import mutate_and_test, mutate_code
from cosmic_ray.testing import run_tests
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkItem, WorkResult

from tests.mutation import operators

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".mutate"


def shadow(target: str) -> Path:
    """The copy of src/ this target mutates: one per target, so that two
    targets can run at once (``make mutate MODULES=a & make mutate MODULES=b``)."""
    return WORK / target / "src"

EQUIVALENT_FILE = Path(__file__).with_name("equivalent.toml")
# Bump when the pre-filters below change: every session's mutants are then
# filtered again (results kept). When the operators of operators.py change,
# run with --fresh; a change of the target's source starts its session over.
FILTER_VERSION = 2

cosmic_ray.plugins.OPERATOR_PROVIDERS.setdefault("smdp", operators.Provider())

# cosmic-ray replaces every binary operator by each of the ten others and
# every comparison by each of the seven others. Most of those are redundant
# (Offutt et al.'s "selective mutation": the nearest replacement stands for
# them): a "+" on strings made "<<", "**" or "%" fails exactly where "-" does,
# and an ordering made "is" behaves as "==" on the small integers here. We
# keep for each binary operator its nearest neighbour(s) and for each
# comparison every other comparison but the identity ones; "==" <-> "is" and
# "!=" <-> "is not" are dropped as equivalent by construction on enum
# members, None and small integers, which is what this code compares.
_KEPT_BINARY = {
    "Add": ("Sub",), "Sub": ("Add",), "Mul": ("Div", "Add"), "Div": ("Mul", "FloorDiv"),
    "FloorDiv": ("Div", "Mul"), "Mod": ("FloorDiv",), "Pow": ("Mul",),
    "LShift": ("RShift",), "RShift": ("LShift",),
    "BitOr": ("BitAnd", "BitXor"), "BitAnd": ("BitOr",), "BitXor": ("BitOr",),
}
_IDENTITY = ("Is", "IsNot")


def excluded(operator: str) -> bool:
    m = re.fullmatch(r"core/ReplaceBinaryOperator_(\w+?)_(\w+)", operator)
    if m:
        return m.group(2) not in _KEPT_BINARY.get(m.group(1), ())
    m = re.fullmatch(r"core/ReplaceComparisonOperator_(\w+?)_(\w+)", operator)
    if m:
        a, b = m.groups()
        if a in _IDENTITY:
            return b not in _IDENTITY  # keep "is" <-> "is not" only
        return b in _IDENTITY
    return False


@dataclass(frozen=True)
class Scope:
    """A module (path under src/) and, if given, only these definitions in it:
    qualified names of functions, classes, methods or module-level names."""

    path: str
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    scopes: tuple[Scope, ...]
    tests: tuple[str, ...]
    pytest_args: tuple[str, ...] = field(default=())


def _unit(*names: str) -> tuple[str, ...]:
    return tuple(f"tests/unit/{n}.py" for n in names)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("decisions", (Scope("smdp/core/decisions.py"), Scope("smdp/terms.py")),
           _unit("test_core_rules", "test_decision_rules")),
    Target("origin", (Scope("smdp/core/origin.py"),),
           _unit("test_core_rules", "test_origin_rules", "test_origin_routing",
                 "test_notice_triggers")),
    Target("destination", (Scope("smdp/core/destination.py"),),
           _unit("test_core_rules", "test_destination_rules", "test_destination_notify_edges",
                 "test_mx_rules")),
    Target("quality", (Scope("smdp/core/quality.py"),),
           _unit("test_core_rules", "test_quality_rules")),
    # The edge tests first: they take under a second, and -x stops there
    # for the mutants they kill.
    Target("submission", (Scope("smdp/core/submission.py"),),
           _unit("test_submission_rules", "test_submission")),
    Target("lists", (Scope("smdp/core/lists.py"),),
           _unit("test_list_edits", "test_core_rules")),
    Target("addresses", (Scope("smdp/mail/addresses.py"),),
           _unit("test_addresses", "test_address_rules")),
    Target("states", (Scope("smdp/protocol/_states.py"), Scope("smdp/protocol/peer/states.py"),
                      Scope("smdp/protocol/user/states.py"),
                      Scope("smdp/protocol/smtp/states.py")),
           _unit("test_protocol_shared", "test_peer_codec", "test_user_codec",
                 "test_starttls_codec", "test_session_tables", "test_smtp_codec",
                 "test_smtp_session_table")),
    # The codecs' limits: where line lengths, block and message sizes and
    # recipient counts are compared, and the constants they are compared to.
    Target("limits", (
        Scope("smdp/protocol/framing.py", ("LineBuffer", "DataBlockReader.__init__",
                                           "DataBlockReader.consume", "DataBlockReader._take",
                                           "dot_unstuff")),
        Scope("smdp/protocol/_connection.py", ("MIB", "MAX_REPLY_LINES", "MultilineReply",
                                               "ServerConnection.__init__",
                                               "ClientConnection.__init__",
                                               "ClientConnection._next_line",
                                               "ClientConnection._new_reader")),
        Scope("smdp/protocol/peer/connection.py", ("PeerServerConnection.__init__",
                                                   "PeerServerConnection._read",
                                                   "PeerServerConnection._end_block",
                                                   "PeerServerConnection._after",
                                                   "PeerClientConnection._next_event")),
        Scope("smdp/protocol/user/connection.py", ("UserServerConnection._read",
                                                   "UserServerConnection._end_block",
                                                   "UserServerConnection._after",
                                                   "UserClientConnection._next_event")),
        Scope("smdp/protocol/peer/grammar.py", ("_read_start", "_parse_number", "_checked_size",
                                                "read_command")),
        Scope("smdp/protocol/user/grammar.py", ("_MAX_NAME", "_positive", "_checked_positive",
                                                "_checked_token", "_read_user", "_read_pass")),
    ), _unit("test_framing", "test_peer_codec", "test_user_codec", "test_streaming_codec",
             "test_protocol_shared", "test_codec_limits", "test_limit_edges_codecs",
             "test_limit_edges_framing")),
)}


# --- scope and pre-filters -------------------------------------------------------------


def _definitions(tree: ast.Module) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every definition and
    module-level assignment, innermost last when they nest."""
    out: list[tuple[int, int, str]] = []

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            end = node.end_lineno or node.lineno
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                out.append((first, end, prefix + node.name))
                walk(node.body, prefix + node.name + ".")
            elif not prefix and isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for name in ast.walk(t):
                        if isinstance(name, ast.Name):
                            out.append((node.lineno, end, name.id))

    walk(tree.body, "")
    return out


def _enclosing(defs: list[tuple[int, int, str]], line: int) -> str:
    names = [n for first, last, n in defs if first <= line <= last]
    return max(names, key=len) if names else ""


def in_scope(scope: Scope, defs: list[tuple[int, int, str]], line: int) -> bool:
    if not scope.only:
        return True
    name = _enclosing(defs, line)
    return any(name == q or name.startswith(q + ".") for q in scope.only)


class _StripAnnotations(ast.NodeTransformer):
    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AnnAssign:
        node.annotation = ast.Constant(None)
        self.generic_visit(node)
        return node

    def visit_arguments(self, node: ast.arguments) -> ast.arguments:
        # Where the "/" and "*" markers stand changes which calls are accepted,
        # not what an accepted call does: "*" made "/" is a signature, not a rule.
        params = [*node.posonlyargs, *node.args, *node.kwonlyargs]
        defaults = [*node.defaults, *(d for d in node.kw_defaults if d is not None)]
        node.posonlyargs, node.args, node.kwonlyargs = [], params, []
        node.defaults, node.kw_defaults = defaults, []
        self.generic_visit(node)
        return node


def _shape(source: str) -> str:
    return ast.dump(_StripAnnotations().visit(ast.parse(source)))


def prefilter(item: WorkItem, sources: dict[Path, str], scopes: dict[Path, Scope],
              defs: dict[Path, list[tuple[int, int, str]]]) -> str | None:
    """Why this mutant is not worth a test run, or None to run it."""
    (mutation,) = item.mutations
    path = Path(mutation.module_path)
    if excluded(mutation.operator_name):
        return "redundant operator (EXCLUDED_OPERATORS)"
    if not in_scope(scopes[path], defs[path], mutation.start_pos[0]):
        return "outside the target's scope"
    op = cosmic_ray.plugins.get_operator(mutation.operator_name)(**mutation.operator_args)
    mutated = mutate_code(sources[path], op, mutation.occurrence)
    if mutated is None:
        return "no mutation"
    try:
        compile(mutated, str(path), "exec")
        shape = _shape(mutated)
    except (SyntaxError, ValueError):
        return "not valid Python"
    if shape == _shape(sources[path]):
        return "annotation or signature marker only"
    return None


# --- equivalent mutants -----------------------------------------------------------------


@dataclass(frozen=True)
class Equivalent:
    """``mutant``, when given, is the mutated line (stripped): one operator can
    make several mutants of a line (NumberReplacer: each number up and down),
    of which only some are equivalent."""

    file: str
    operator: str
    line: str
    why: str
    # Where one operator makes several mutants of a line (NumberReplacer's
    # n+1 and n-1), the mutated line (stripped) this argument is about.
    mutant: str = ""
    # Where the same source line occurs twice in the file, the line number of
    # the one meant (0: any). A stale number after an edit shows the mutant as
    # a survivor again; it never hides another.
    at: int = 0


def load_equivalents() -> list[Equivalent]:
    if not EQUIVALENT_FILE.exists():
        return []
    data = tomllib.loads(EQUIVALENT_FILE.read_text())
    return [Equivalent(e["file"], e["operator"], e["line"].strip(), e["why"],
                       e.get("mutant", "").strip(), int(e.get("at", 0)))
            for e in data.get("equivalent", [])]


def _source_line(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1].strip()


def _mutated_line(diff: str | None) -> str:
    """The line a mutant puts in place of the original (stripped), from its diff."""
    for row in (diff or "").splitlines():
        if row.startswith("+") and not row.startswith("+++"):
            return row[1:].strip()
    return ""


def equivalent_for(rel: str, operator: str, line: str, equivalents: list[Equivalent],
                   mutated: str = "", lineno: int = 0) -> Equivalent | None:
    for e in equivalents:
        if (e.file == rel and e.operator == operator and e.line == line
                and (not e.mutant or e.mutant == mutated) and (not e.at or e.at == lineno)):
            return e
    return None


# --- sessions ---------------------------------------------------------------------------


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p).encode())
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()


def sync_shadow(target: str) -> None:
    """A fresh copy of src/ to mutate (also undoes a mutant left by a killed run)."""
    copy = shadow(target)
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT / "src", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def test_command(target: Target, timeout: float) -> str:
    """pytest on the target's tests, as cheap as it can be: stop at the first
    failure; no assertion rewriting (a pass or a fail is all a mutant needs,
    and rewriting ~80 modules took half of each run); temporary files, the
    SQLite stores among them, on tmpfs where there is one (their fsyncs took
    the other half)."""
    tests = [t for t in target.tests if (ROOT / t).exists()]
    shm = Path("/dev/shm")
    basetemp = [f"--basetemp={shm}/smdp-mutate-{target.name}"] if shm.is_dir() else []
    return " ".join([
        sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider",
        "--assert=plain", *basetemp, "-p", "tests.mutation.profile", f"--timeout={int(timeout)}",
        *target.pytest_args, *tests,
    ])


def _reset_survivors(session: Path) -> int:
    with sqlite3.connect(session) as db:
        cur = db.execute("DELETE FROM work_results WHERE test_outcome IN ('SURVIVED', 'survived')")
        return cur.rowcount


def prepare(target: Target, fresh: bool) -> Path:
    session = WORK / f"{target.name}.sqlite"
    stamp_file = WORK / f"{target.name}.stamp.json"
    paths = [shadow(target.name) / s.path for s in target.scopes]
    sources = [ROOT / "src" / s.path for s in target.scopes]
    stamp = {
        "source": _digest(sources),
        "tests": _digest([ROOT / t for t in target.tests]),
    }
    stamp["filters"] = str(FILTER_VERSION)
    old = json.loads(stamp_file.read_text()) if stamp_file.exists() else {}
    if fresh or not session.exists() or old.get("source") != stamp["source"]:
        session.unlink(missing_ok=True)
        with use_db(str(session)) as db:
            cr_init(paths, db, {})
            _filter(target, db)
        print(f"[{target.name}] new session: {_count(session)} mutants")
    else:
        if old.get("filters") != stamp["filters"]:
            with use_db(str(session)) as db:
                _filter(target, db, every=True)
            print(f"[{target.name}] filters changed: mutants filtered again")
        if old.get("tests") != stamp["tests"]:
            n = _reset_survivors(session)
            print(f"[{target.name}] tests changed: {n} survivors to run again")
    stamp_file.write_text(json.dumps(stamp))
    return session


def _count(session: Path) -> int:
    with sqlite3.connect(session) as db:
        (n,) = db.execute("SELECT count(*) FROM work_items").fetchone()
        return int(n)


def _filter(target: Target, db: WorkDB, *, every: bool = False) -> None:
    scopes = {shadow(target.name) / s.path: s for s in target.scopes}
    sources = {p: p.read_text() for p in scopes}
    defs = {p: _definitions(ast.parse(src)) for p, src in sources.items()}
    items = ([item for item, _ in db.completed_work_items] + list(db.pending_work_items)
             if every else db.pending_work_items)
    for item in items:
        why = prefilter(item, sources, scopes, defs)
        if why is not None:
            db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=why))


def baseline(target: Target) -> float:
    os.environ["PYTHONPATH"] = str(shadow(target.name))
    check = subprocess.run([sys.executable, "-c", "import smdp; print(smdp.__file__)"],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    if not check.stdout.strip().startswith(str(shadow(target.name))):
        sys.exit(f"the tests would not import the mutated copy: {check.stdout.strip()}")
    started = time.monotonic()
    outcome, output = run_tests(test_command(target, 600), 600)
    took = time.monotonic() - started
    if outcome != TestOutcome.SURVIVED:
        sys.exit(f"[{target.name}] the tests fail without any mutation:\n{output}")
    return took


def execute(target: Target, session: Path) -> None:
    with use_db(str(session)) as db:
        pending = list(db.pending_work_items)
        if not pending:
            return
        took = baseline(target)
        timeout = max(30.0, 4 * took)
        command = test_command(target, timeout)
        print(f"[{target.name}] {len(pending)} mutants to run, baseline {took:.1f} s, "
              f"timeout {timeout:.0f} s each")
        for n, item in enumerate(pending, 1):
            (mutation,) = item.mutations
            result = mutate_and_test(item.mutations, command, timeout)
            db.set_result(item.job_id, result)
            what = ("timeout" if result.output == "timeout"
                    else result.test_outcome.value if result.test_outcome else "?")
            rel = Path(mutation.module_path).relative_to(shadow(target.name))
            where = f"{rel}:{mutation.start_pos[0]}"
            print(f"[{target.name}] {n}/{len(pending)} {what:<11} {mutation.operator_name} "
                  f"{where}", flush=True)


# --- report -----------------------------------------------------------------------------


@dataclass
class Figures:
    killed: int = 0
    timeouts: int = 0
    survived: int = 0
    equivalent: int = 0
    incompetent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def run(self) -> int:
        return self.killed + self.timeouts + self.survived + self.equivalent + self.incompetent

    @property
    def score(self) -> float:
        live = self.killed + self.timeouts + self.survived
        return 100.0 * (self.killed + self.timeouts) / live if live else 100.0


def report(target: Target, session: Path, equivalents: list[Equivalent]) -> Figures:
    figures = Figures()
    survivors: list[str] = []
    killed_equivalents: list[str] = []
    with use_db(str(session)) as db:
        for item, result in db.completed_work_items:
            (m,) = item.mutations
            if result.worker_outcome in (WorkerOutcome.SKIPPED, WorkerOutcome.NO_TEST):
                figures.skipped[result.output or "skipped"] += 1
                continue
            path = Path(m.module_path)
            rel = str(path.relative_to(shadow(target.name)))
            line = _source_line(ROOT / "src" / rel, m.start_pos[0])
            eq = equivalent_for(rel, m.operator_name, line, equivalents,
                                _mutated_line(result.diff), m.start_pos[0])
            where = f"{rel}:{m.start_pos[0]} {m.operator_name}"
            if result.test_outcome == TestOutcome.SURVIVED:
                if eq is not None:
                    figures.equivalent += 1
                else:
                    figures.survived += 1
                    survivors.append(f"{where}\n{result.diff or ''}\n")
            elif result.test_outcome == TestOutcome.KILLED:
                if eq is not None:
                    killed_equivalents.append(where)
                if result.output == "timeout":
                    figures.timeouts += 1
                else:
                    figures.killed += 1
            else:
                figures.incompetent += 1
    (WORK / f"{target.name}.survivors").write_text("\n".join(survivors))
    for where in killed_equivalents:
        print(f"[{target.name}] listed as equivalent but killed, remove it: {where}")
    for s in survivors:
        print(f"[{target.name}] SURVIVED {s.splitlines()[0]}")
        for line in s.splitlines()[1:]:
            if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                print(f"        {line}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--report", action="store_true", help="only print the figures")
    args = parser.parse_args(argv)
    names = [n for arg in args.targets for n in arg.replace(",", " ").split()] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    WORK.mkdir(exist_ok=True)
    os.chdir(ROOT)
    equivalents = load_equivalents()
    rows = []
    started = time.monotonic()
    for name in names:
        target = TARGETS[name]
        session = WORK / f"{name}.sqlite"
        if not args.report:
            sync_shadow(name)
            session = prepare(target, args.fresh)
            execute(target, session)
        if session.exists():
            rows.append((name, report(target, session, equivalents)))
    print("\n| target | killed | timeouts | survived | equivalent | run | skipped | score |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in rows:
        print(f"| {name} | {f.killed} | {f.timeouts} | {f.survived} | {f.equivalent} | {f.run} "
              f"| {sum(f.skipped.values())} | {f.score:.1f}% |")
    print(f"\nscore = (killed + timeouts) / (run - equivalent - incompetent); "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
