#!/usr/bin/env python3
"""The layer rule of rackseed (docs/ARCHITECTURE.md, "Layer rules"), checked.

Reads every server/src/**/*.rs, maps each file to its module (`dhcp/decide.rs` is
`dhcp::decide`, `mod.rs` is its directory's module) and collects the crate modules
it names (`use crate::…`, grouped `use crate::{a, b::c}`, `crate::a::b::` and
`super::` paths in code, names brought in by `use` and then used as a path) and the
crates it names. Test code is left out: `#[cfg(test)]` items (a `mod tests { … }`,
a `mod x;` whose file then counts as test code, a function or a `use`).

Fails (exit 1, one line per violation: file, line, rule) when
  cycle  modules, taken at the level `top` or `top::sub`, import each other in a
         cycle; an edge between a module and its own parent or child does not count;
  io     a decision module uses an I/O crate or names an I/O module of the crate.

`python3 tests/layers.py --self-test` runs the checker on a small made-up tree and
checks that it reports both kinds; `--root DIR` checks another `server/src`. Python 3
standard library only.
"""

import os
import re
import sys
import tempfile
from collections import defaultdict

# Decision and protocol modules: plain functions over typed values, and the leaf types
# (`mac`, `sshkey`, `node`, `bootfiles`, `mirror`, `chunks`, `inventory::state`) held to
# the same rule. A name covers its submodules, except those listed in DECISION_EXCEPT.
DECISION = [
    "dhcp::classify",
    "dhcp::decide",
    "dhcp::journal",
    "dhcp::leases",
    "dhcp::limit",
    "dhcp::report",
    "plan",
    "render",
    "profiles",
    "groups",
    "identity",
    "enroll",
    "power",
    "commission",
    "backup",
    "console",
    "accounts",
    "stall",
    "health",
    "facts",
    "sshkey",
    "mac",
    "node",
    "bootfiles",
    "mirror",
    "chunks",
    "inventory::state",
    "syslog::line",
    "tftp::tree",
    "tftp::wire",
    "http::head",
]
DECISION_EXCEPT = [
    "power::driver",  # runs ipmitool, sends Redfish HTTP
    "power::vault",  # reads the key file
    "profiles::cli",  # `rackseed profile`: a command, not a decision
    "backup::store",  # takes the snapshot, writes and restores the files
]

# Crates that do I/O: sockets, SQLite, HTTP, TFTP, TLS streams, system calls, the async
# runtime.
IO_CRATES = [
    "tokio",
    "tokio_util",
    "rusqlite",
    "postgres",
    "axum",
    "hyper",
    "hyper_util",
    "reqwest",
    "tower",
    "tower_http",
    "socket2",
    "tokio_rustls",
    "nix",
]

# Modules of the crate that do I/O. A name covers its submodules, except those in
# IO_EXCEPT (pure modules that live under an I/O module).
IO_MODULES = [
    "inventory",
    "events",
    "state",
    "http",
    "serve",
    "tftp",
    "workers",
    "syslog",
    "dhcp::server",
    "dhcp::store",
    "backup::store",
    "images",
    "ca",
    "durable",
    "cli",
    "agent",
]
IO_EXCEPT = [
    "inventory::state",  # the node state machine
    "syslog::line",  # parsing and holding log lines
    "tftp::tree",  # the TFTP names, path checks, session cap
    "tftp::wire",  # TFTP packets, the option answer, ACK windows
    "http::head",  # an HTTP request head, for the node listener's zero-copy path
]

# Modules left out of the checks (and edges to or from them out of the cycle search).
# Empty: the CLI's import cycle went when the commands moved into `cli/`.
EXEMPT: list = []

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def under(module, prefixes):
    """True when `module` is one of `prefixes` or inside one of them."""
    return any(module == p or module.startswith(p + "::") for p in prefixes)


def is_decision(m):
    return under(m, DECISION) and not under(m, DECISION_EXCEPT)


def is_io_module(m):
    return under(m, IO_MODULES) and not under(m, IO_EXCEPT)


def is_exempt(m):
    return under(m, EXEMPT)


def blank(text):
    """The text with comments, strings and char literals replaced by spaces; lines kept."""
    out = []
    i, n = 0, len(text)

    def keep_newlines(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(keep_newlines(text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 40]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(keep_newlines(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(keep_newlines(text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'\n])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def item_end(text, start):
    """Index just past the item that begins at `start`: through its `;` or its block."""
    i, depth = start, 0
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return len(text)


def strip_tests(code):
    """`code` with `#[cfg(test)]` items blanked; also the names of `#[cfg(test)] mod x;`."""
    test_mods = []
    out = list(code)
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        start = m.start()
        if out[start] == " ":  # already inside a blanked item
            continue
        rest = code[m.end():]
        # Skip further attributes before the item.
        k = m.end() + len(rest) - len(rest.lstrip())
        while code.startswith("#[", k):
            k = item_end_attr(code, k)
            k = k + len(code[k:]) - len(code[k:].lstrip())
        decl = re.match(r"(pub(\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", code[k:])
        if decl:
            test_mods.append(decl.group(3))
        end = item_end(code, k)
        for j in range(start, end):
            if out[j] != "\n":
                out[j] = " "
    return "".join(out), test_mods


def item_end_attr(code, k):
    depth = 0
    for j in range(k, len(code)):
        if code[j] == "[":
            depth += 1
        elif code[j] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def expand_use(tree):
    """`a::{b, c::{d, e as f}, self}` → [(["a","b"], "b"), (["a","c","d"], "d"), …]."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def parse(s, prefix):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            if not p:
                continue
            brace = p.find("{")
            if brace >= 0 and p.endswith("}"):
                head = [x for x in p[:brace].split("::") if x]
                parse(p[brace + 1:-1], prefix + head)
                continue
            segs = [x for x in p.split("::") if x]
            if segs and segs[-1] == "self":
                segs = segs[:-1]
                results.append((prefix + segs, (prefix + segs)[-1] if prefix + segs else None))
                continue
            if segs:
                results.append((prefix + segs, segs[-1]))

    parse(tree, [])
    return results


def use_trees(code):
    """(line, pub?, tree-with-aliases) for every `use` declaration in blanked code."""
    for m in re.finditer(r"(?<![A-Za-z0-9_])(pub(\s*\([^)]*\))?\s+)?use\s+([^;]+);", code):
        line = code.count("\n", 0, m.start()) + 1
        yield line, bool(m.group(1)), m.group(3), (m.start(), m.end())


def split_alias_tree(tree):
    """Expand a use tree, honouring `x as y` (spaces still present)."""
    tree = re.sub(r"\s+as\s+", " as ", tree)
    aliases = {}
    # Replace `path as name` with `path` and remember name for the last segment.
    def repl(m):
        aliases[m.group(1)] = m.group(2)
        return m.group(1)
    plain = re.sub(r"(" + IDENT + r") as (" + IDENT + r")", repl, tree)
    out = []
    for segs, name in expand_use(plain):
        if segs and segs[-1] in aliases:
            name = aliases[segs[-1]]
        out.append((segs, name))
    return out


class Source:
    def __init__(self, root, path):
        self.path = path
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        self.rel = rel
        parts = rel[:-3].split("/")
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        self.module = parts  # full module path, segments
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        self.code, self.test_mods = strip_tests(blank(self.text))


def resolve_relative(segs, module, is_mod_file):
    """Absolute crate path of `segs` written in `module`; None for another crate."""
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(module)
        i = 0
        while i < len(segs) and segs[i] in ("super", "self"):
            if segs[i] == "super":
                base = base[:-1]
            i += 1
        return base + segs[i:]
    return None


def load(root):
    files = []
    for d, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(".rs"):
                files.append(Source(root, os.path.join(d, n)))
    files = [f for f in files if f.rel != "main.rs"]  # the binary: `rackseed::…`, no `crate::`
    # Files declared `#[cfg(test)] mod x;` are test code.
    test_files = set()
    for f in files:
        for t in f.test_mods:
            test_files.add("::".join(f.module + [t]))
    changed = True
    while changed:
        changed = False
        for f in files:
            m = "::".join(f.module)
            if m not in test_files and any(m.startswith(t + "::") for t in test_files):
                test_files.add(m)
                changed = True
    return [f for f in files if "::".join(f.module) not in test_files]


def analyse(root):
    files = load(root)
    modules = {tuple(f.module) for f in files}

    # Re-exports: module → {name: absolute path}.
    reexports = defaultdict(dict)
    for f in files:
        for _, pub, tree, _ in use_trees(f.code):
            if not pub:
                continue
            for segs, name in split_alias_tree(tree):
                abs_ = resolve_relative(segs, f.module, True)
                if abs_ is None and segs and tuple(f.module + [segs[0]]) in modules:
                    abs_ = f.module + segs  # `pub use child::Item`
                if abs_ is not None and name:
                    reexports[tuple(f.module)][name] = abs_

    def owner(path, depth=0):
        """(named module, defining module) of an absolute path."""
        best = ()
        for k in range(len(path), 0, -1):
            if tuple(path[:k]) in modules:
                best = tuple(path[:k])
                break
        named = best
        rest = path[len(best):]
        if rest and depth < 8 and rest[0] in reexports.get(best, {}):
            target = reexports[best][rest[0]] + rest[1:]
            return named, owner(target, depth + 1)[1]
        return named, best

    edges = []  # (from_node, to_node, file, line, named_module_full, kind)
    crate_uses = []  # (file, line, crate)
    for f in files:
        code = f.code
        local = {}  # local name → absolute path (from `use`)
        spans = []
        for line, _, tree, span in use_trees(code):
            spans.append(span)
            for segs, name in split_alias_tree(tree):
                abs_ = resolve_relative(segs, f.module, True)
                if abs_ is None and segs and tuple(f.module + [segs[0]]) in modules:
                    abs_ = f.module + segs
                if abs_ is None:
                    if segs:
                        crate_uses.append((f, line, segs[0]))
                    continue
                if name:
                    local[name] = abs_
                edges.append((f, line, abs_))
        # Paths in code outside `use` declarations.
        mask = list(code)
        for a, b in spans:
            for j in range(a, b):
                if mask[j] != "\n":
                    mask[j] = " "
        body = "".join(mask)
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + r")", body):
            segs = m.group(1).split("::")
            line = body.count("\n", 0, m.start()) + 1
            if segs[0] in ("crate", "super", "self"):
                abs_ = resolve_relative(segs, f.module, True)
            elif segs[0] in local:
                abs_ = local[segs[0]] + segs[1:]
            else:
                crate_uses.append((f, line, segs[0]))
                continue
            edges.append((f, line, abs_))
        for m in re.finditer(r"#\[(" + IDENT + r")::", body):
            crate_uses.append((f, body.count("\n", 0, m.start()) + 1, m.group(1)))
        for m in re.finditer(r"\bextern\s+crate\s+(" + IDENT + r")", body):
            crate_uses.append((f, body.count("\n", 0, m.start()) + 1, m.group(1)))

    resolved = []
    for f, line, abs_ in edges:
        named, defining = owner(abs_)
        resolved.append((f, line, named, defining))
    return files, resolved, crate_uses


def node_of(module):
    """The module at the level the cycle rule works on: `top` or `top::sub`."""
    return "::".join(module[:2])


def related(a, b):
    sa, sb = a.split("::"), b.split("::")
    n = min(len(sa), len(sb))
    return sa[:n] == sb[:n]


def also(lines):
    """The further lines of one violation in the same file, for the report."""
    rest = sorted(set(lines))[1:]
    return f" (also lines {', '.join(map(str, rest))})" if rest else ""


def check(root):
    files, edges, crate_uses = analyse(root)
    problems = []

    # Rule io: decision modules use no I/O crate and name no I/O module.
    crates = defaultdict(list)  # (file, module, crate) → lines
    for f, line, krate in crate_uses:
        m = "::".join(f.module)
        if is_decision(m) and not is_exempt(m) and krate in IO_CRATES:
            if line not in crates[(f.rel, m, krate)]:
                crates[(f.rel, m, krate)].append(line)
    for (rel, m, krate), lines in crates.items():
        problems.append(
            (rel, lines[0], f"io: decision module `{m}` uses the I/O crate `{krate}`" + also(lines))
        )
    found = defaultdict(list)  # (file, module, target) → lines
    for f, line, named, defining in edges:
        m = "::".join(f.module)
        if not is_decision(m) or is_exempt(m):
            continue
        for target in sorted({"::".join(named), "::".join(defining)}):
            if target and is_io_module(target) and line not in found[(f.rel, m, target)]:
                found[(f.rel, m, target)].append(line)
    for (rel, m, target), lines in found.items():
        problems.append(
            (rel, lines[0], f"io: decision module `{m}` imports the I/O module `{target}`"
             + also(lines))
        )

    # Rule cycle: the graph between modules at the level `top` or `top::sub`.
    graph = defaultdict(set)
    where = defaultdict(list)
    for f, line, named, defining in edges:
        a = node_of(f.module)
        for t in {named, defining}:
            b = node_of(list(t))
            if not a or not b or a == b or related(a, b):
                continue
            if is_exempt(a) or is_exempt(b):
                continue
            graph[a].add(b)
            if (f.rel, line) not in where[(a, b)]:
                where[(a, b)].append((f.rel, line))

    def path(src, dst):
        """A shortest path src → … → dst in the graph, or None."""
        prev, todo = {src: None}, [src]
        while todo:
            nxt = []
            for u in todo:
                for v in sorted(graph[u]):
                    if v not in prev:
                        prev[v] = u
                        if v == dst:
                            out = [v]
                            while prev[out[-1]] is not None:
                                out.append(prev[out[-1]])
                            return out[::-1]
                        nxt.append(v)
            todo = nxt
        return None

    for (a, b), places in sorted(where.items()):
        back = path(b, a)
        if back is None:
            continue
        cycle = " -> ".join([a] + back)
        by_file = defaultdict(list)
        for rel, line in places:
            by_file[rel].append(line)
        for rel, lines in by_file.items():
            problems.append(
                (rel, lines[0], f"cycle: `{a}` imports `{b}`, which leads back: {cycle}" + also(lines))
            )

    problems.sort(key=lambda p: (p[0], p[1], p[2]))
    return problems, files, graph


def main(argv):
    if "--self-test" in argv:
        return self_test()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(os.path.dirname(here), "server", "src")
    if "--root" in argv:  # another tree, e.g. an older commit's `server/src`
        root = argv[argv.index("--root") + 1]
    problems, files, graph = check(root)
    for rel, line, text in problems:
        print(f"server/src/{rel}:{line}: {text}")
    if problems:
        print(f"layers: {len(problems)} violation(s) of the layer rule (docs/ARCHITECTURE.md)")
        return 1
    n = sum(len(v) for v in graph.values())
    print(f"layers: ok ({len(files)} files, {n} module edges, no cycle, no I/O in decision modules)")
    return 0


def self_test():
    """Runs the checker on a made-up tree with one cycle and one I/O crate in a decision module."""
    tree = {
        "lib.rs": "pub mod plan;\npub mod render;\npub mod http;\npub mod inventory;\n"
        "pub mod mac;\npub mod cli;\npub mod serve;\npub mod stall;\n",
        "plan.rs": "use crate::render::Thing;\npub struct Plan;\n",
        "render/mod.rs": (
            "pub mod network;\n"
            "use crate::{mac, plan::{self, Plan}};\n"
            "pub fn f() -> usize { tokio::spawn(async {}); 0 }\n"
            "#[cfg(test)]\nmod tests {\n    use crate::http::boot;\n}\n"
        ),
        "render/network.rs": "use super::f;\n// crate::http::boot::x in a comment\n"
        "const S: &str = \"crate::inventory::Inventory\";\n",
        "http/mod.rs": "pub mod boot;\n",
        "http/boot.rs": "use crate::render;\npub fn g() { super::super::plan::Plan; }\n",
        "inventory/mod.rs": "pub mod state;\npub use state::NodeState;\nuse rusqlite::Connection;\n",
        "inventory/state.rs": "pub enum NodeState { New }\n",
        "mac.rs": "use crate::inventory::NodeState;\n",
        "cli.rs": "use crate::serve;\n",
        "serve.rs": "pub fn g() { crate::cli::run(); }\n",
        "stall.rs": "pub fn g() { crate::cli::run(); }\n",
    }
    with tempfile.TemporaryDirectory() as d:
        for rel, text in tree.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
        problems, _, graph = check(d)
    lines = [f"{rel}:{line}: {text}" for rel, line, text in problems]
    want = [
        "plan.rs:1: cycle: `plan` imports `render`",
        "render/mod.rs:2: cycle: `render` imports `plan`",
        "render/mod.rs:3: io: decision module `render` uses the I/O crate `tokio`",
        "mac.rs:1: io: decision module `mac` imports the I/O module `inventory`",
        "stall.rs:1: io: decision module `stall` imports the I/O module `cli`",
        "cli.rs:1: cycle: `cli` imports `serve`",
        "serve.rs:1: cycle: `serve` imports `cli`",
    ]
    unwanted = [
        "render/mod.rs:6",  # test module
        "render/network.rs",  # parent import, comment, string
        "http/boot.rs",  # http -> render -> plan -> render is not http's cycle
    ]
    failed = False
    for w in want:
        if not any(l.startswith(w) for l in lines):
            print(f"layers self-test: missing: {w}")
            failed = True
    for u in unwanted:
        for l in lines:
            if l.startswith(u):
                print(f"layers self-test: unexpected: {l}")
                failed = True
    if failed:
        print("layers self-test: reported:\n  " + "\n  ".join(lines))
        return 1
    print(f"layers self-test: ok ({len(lines)} violations found as expected)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
