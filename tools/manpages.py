#!/usr/bin/env python3
"""Writes ringfiber's manual pages (section 3) from include/ringfiber.h.

usage: tools/manpages.py --header include/ringfiber.h --out DIR [--stamp FILE]

The header's comments are the reference; this script only lays them out.
Every public function (declared with RF_API; names starting with rf__ are
not API) gets a page DIR/<name>.3, and DIR/ringfiber.3 gives the
conventions of the header's top comment and lists every function, type and
constant, section by section.

How the header is read:
 - the comment directly above a declaration documents it; declarations
   that follow one comment with no blank line between them share it (each
   gets a page with the whole comment, listing the others in SYNOPSIS and
   SEE ALSO); typedefs, #defines, forward declarations and #if lines may
   sit between the comment and the declarations;
 - a one-line comment next to a "/* ---- */" rule is a section title; the
   first comment of a section that documents no function and no struct is
   the section's introduction, repeated in NOTES of the section's pages
   (an introduction that speaks of "this section and the next" also goes
   to the next section's pages);
 - a "/* ---- title ---- */" line starts a subsection;
 - a comment standing alone after other declarations of its section is a
   note on those just above it;
 - in a comment: "- " starts a bullet, "1. " a numbered item, an indented
   line starting with -E<errno> an entry of an error list, a line
   "name: text" followed by indented lines a tagged entry, and an indented
   block after a blank line is code, kept verbatim.

A function's page also shows, under TYPES, the typedefs with a body
(structs, function types) its prototypes use, and under CONSTANTS the
#defines its comment or those types name ("RF_LOOP_*": all of them), each
with its comment.

A public function without a comment gets no page: a warning is printed,
and the CTest check (tests/man/check_manpages.py) fails. The output
depends on the header alone (the version in the page footers is the
header's): no date, no host.
"""

import argparse
import os
import re
import sys

# ---------------------------------------------------------------- reading

RULE = re.compile(r"^/\*\s*-{8,}\s*\*/$")
SUBTITLE = re.compile(r"^/\*\s*-{3,}\s+(.+?)\s+-{3,}\s*\*/$")
ONE_LINE = re.compile(r"^/\*\s*(.*?)\s*\*/$")


class Item:
    """A piece of the header: a comment, a preprocessor line, a statement,
    or a blank line."""

    def __init__(self, kind, lines, lineno):
        self.kind = kind  # comment, pp, code, blank, other
        self.lines = lines
        self.lineno = lineno

    @property
    def text(self):
        return "\n".join(self.lines)


def strip_comments(s):
    return re.sub(r"/\*.*?\*/", " ", s, flags=re.S)


def tokenize(text):
    lines = text.split("\n")
    num = list(range(1, len(lines) + 1))  # each line's number in the file
    items = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        s = line.strip()
        start = i
        if not s:
            items.append(Item("blank", [line], num[i]))
            i += 1
            continue
        if s.startswith("/*"):
            j = i
            rest = line[line.index("/*") + 2:]
            while "*/" not in rest:
                j += 1
                if j >= n:
                    raise SyntaxError("line %d: unterminated comment" % num[i])
                rest = lines[j]
            cut = len(lines[j]) - len(rest) + rest.index("*/") + 2
            after = lines[j][cut:]
            if after.strip():
                # Code after the comment on its line: read it on its own.
                lines[j:j + 1] = [lines[j][:cut], " " * cut + after]
                num[j:j + 1] = [num[j], num[j]]
                n += 1
            items.append(Item("comment", lines[i:j + 1], num[i]))
            i = j + 1
            continue
        if s.startswith("#"):
            # Up to the end of the directive: continued lines, and a
            # trailing comment over as many lines as it takes.
            j = i
            in_comment = False
            while True:
                cur = lines[j]
                k = 0
                while k < len(cur):
                    if in_comment:
                        end = cur.find("*/", k)
                        if end < 0:
                            break
                        in_comment = False
                        k = end + 2
                    else:
                        begin = cur.find("/*", k)
                        if begin < 0:
                            break
                        in_comment = True
                        k = begin + 2
                if (cur.rstrip().endswith("\\") or in_comment) and j + 1 < n:
                    j += 1
                    continue
                break
            items.append(Item("pp", lines[i:j + 1], num[i]))
            i = j + 1
            continue
        if s in ("}",) or re.match(r'^extern\s+"C"\s*\{$', s):
            items.append(Item("other", [line], num[i]))
            i += 1
            continue
        # A statement: up to the ';' or the '}' that ends it at depth 0.
        depth = 0
        in_comment = False
        j = i
        done = False
        while j < n and not done:
            cur = lines[j]
            k = 0
            last = ""
            while k < len(cur):
                if in_comment:
                    end = cur.find("*/", k)
                    if end < 0:
                        k = len(cur)
                        break
                    in_comment = False
                    k = end + 2
                    continue
                if cur.startswith("/*", k):
                    in_comment = True
                    k += 2
                    continue
                c = cur[k]
                if c in "{(":
                    depth += 1
                elif c in "})":
                    depth -= 1
                if not c.isspace():
                    last = c
                k += 1
            if depth == 0 and not in_comment and last in (";", "}"):
                done = True
            j += 1
        if not done:
            raise SyntaxError("line %d: statement without an end" % num[start])
        items.append(Item("code", lines[start:j], num[start]))
        i = j
    return items


def comment_text(item):
    """The comment's lines without the comment marks, as (indent, text)
    pairs relative to the comment's least indented line; None for a
    blank line."""
    out = []
    raw = item.lines
    for k, line in enumerate(raw):
        s = line.expandtabs()
        if k == 0:
            s = s[s.index("/*") + 2:]
        else:
            t = s.lstrip()
            if t.startswith("*/"):
                s = ""
            elif t.startswith("*"):
                s = t[1:]
            else:
                s = t
        if k == len(raw) - 1 and "*/" in s:
            s = s[:s.rindex("*/")]
        s = s.rstrip()
        out.append(s)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    base = min((len(s) - len(s.lstrip()) for s in out if s.strip()), default=0)
    res = []
    for s in out:
        if not s.strip():
            res.append(None)
        else:
            res.append((len(s) - len(s.lstrip()) - base, s.strip()))
    return res


BULLET = re.compile(r"^- (?=\S)")
NUMBER = re.compile(r"^(\d+)\. (?=\S)")
ERRNO = re.compile(r"^-E[A-Z0-9]+\b")
HANG_TAG = re.compile(r"^(\S+:)\s+(.*)$")


def parse_blocks(lines):
    """Splits a comment's (indent, text) lines into blocks:
    ("p", [lines]), ("code", [lines]), ("ul"|"ol"|"dl", [(tag, [lines])]).
    """
    blocks = []
    i = 0
    n = len(lines)
    prev_blank = True

    def list_items(i, ind, starts):
        """Items starting at lines of indent ind that match starts; each
        goes on over the lines indented deeper."""
        items = []
        while i < n and lines[i] is not None:
            li, lt = lines[i]
            if li != ind or not starts(lt):
                break
            body = [lt]
            i += 1
            while i < n and lines[i] is not None and lines[i][0] > ind:
                body.append(lines[i][1])
                i += 1
            items.append(body)
        return items, i

    while i < n:
        if lines[i] is None:
            prev_blank = True
            i += 1
            continue
        ind, txt = lines[i]
        if BULLET.match(txt):
            items, i = list_items(i, ind, BULLET.match)
            blocks.append(("ul", [("", [b[0][2:]] + b[1:]) for b in items]))
        elif NUMBER.match(txt):
            items, i = list_items(i, ind, NUMBER.match)
            out = []
            for b in items:
                m = NUMBER.match(b[0])
                out.append((m.group(1) + ".", [b[0][m.end():]] + b[1:]))
            blocks.append(("ol", out))
        elif ind > 0 and ERRNO.match(txt):
            # An error list; a line at the items' indent that names no
            # error (", or the error of ...") is an item without a tag.
            items, i = list_items(i, ind, lambda t: True)
            out = []
            for b in items:
                first = b[0]
                if ERRNO.match(first):
                    if "  " in first:
                        tag, rest = first.split("  ", 1)
                    else:
                        tag, _, rest = first.partition(" ")
                    out.append((tag.strip(), [rest.strip()] + b[1:]))
                else:
                    out.append(("", b))
            blocks.append(("dl", out))
        elif ind > 0 and prev_blank:
            code = []
            while i < n:
                if lines[i] is None:
                    k = i
                    while k < n and lines[k] is None:
                        k += 1
                    if k < n and lines[k][0] > 0:
                        code.extend([""] * (k - i))
                        i = k
                        continue
                    break
                if lines[i][0] == 0:
                    break
                code.append(lines[i])
                i += 1
            m = min(c[0] for c in code if c)
            blocks.append(("code", [" " * (c[0] - m) + c[1] if c else ""
                                    for c in code]))
        else:
            # A paragraph. Its first line followed by deeper lines is the
            # tag of a hanging item ("name: text" with continuation lines).
            if (ind == 0 and HANG_TAG.match(txt) and i + 1 < n
                    and lines[i + 1] is not None and lines[i + 1][0] > 0
                    and not ERRNO.match(lines[i + 1][1])):
                items, i = list_items(i, 0, HANG_TAG.match)
                out = []
                for b in items:
                    m = HANG_TAG.match(b[0])
                    out.append((m.group(1), [m.group(2)] + b[1:]))
                if blocks and blocks[-1][0] == "dl" and not prev_blank:
                    blocks[-1][1].extend(out)
                else:
                    blocks.append(("dl", out))
                prev_blank = False
                continue
            para = [txt]
            i += 1
            while i < n and lines[i] is not None:
                li, lt = lines[i]
                if BULLET.match(lt) or NUMBER.match(lt):
                    break
                if li > 0 and ERRNO.match(lt):
                    break
                if li == 0 and HANG_TAG.match(lt) and i + 1 < n and \
                        lines[i + 1] is not None and lines[i + 1][0] > 0 and \
                        not ERRNO.match(lines[i + 1][1]):
                    break
                para.append(lt)
                i += 1
            blocks.append(("p", para))
        prev_blank = False
    return blocks


class Func:
    def __init__(self, name, ret, params, lineno):
        self.name = name
        self.ret = ret
        self.params = params  # list of strings, [] for (void)
        self.lineno = lineno
        self.group = None

    def prototype(self):
        sep = "" if self.ret.endswith("*") else " "
        return "%s%s%s(%s);" % (self.ret, sep, self.name,
                                ", ".join(self.params) or "void")


class Group:
    """Declarations sharing one comment."""

    def __init__(self, comment, section, subtitle):
        self.comment = comment  # Item or None
        self.section = section
        self.subtitle = subtitle
        self.funcs = []
        self.extra = []  # typedefs and #defines of the same chunk
        self.blocks = parse_blocks(comment_text(comment)) if comment else []


class Chunk:
    """A comment and the lines that follow it up to a blank line (or
    lines with no comment above them)."""

    def __init__(self, comment, items, section, subtitle):
        self.comment = comment
        self.items = items
        self.section = section
        self.subtitle = subtitle
        self.notes = []  # comments standing alone after it


class Section:
    def __init__(self, title):
        self.title = title
        self.intro = None  # Chunk
        self.chunks = []
        self.groups = []
        self.intro_reaches_next = False


def split_params(s):
    s = s.strip()
    if s in ("", "void"):
        return []
    out = []
    depth = 0
    cur = ""
    for c in s:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    out.append(cur.strip())
    return out


def parse_decl(item):
    s = " ".join(strip_comments(item.text).split())
    m = re.match(r"^RF_API\s+(.+?)\b([A-Za-z_]\w*)\s*\((.*)\)\s*;$", s)
    if not m:
        raise SyntaxError("cannot read the declaration %r" % s)
    ret = m.group(1).strip()
    ret = re.sub(r"\s*\*\s*", " *", ret).replace("* *", "**").strip()
    params = [" ".join(p.split()) for p in split_params(m.group(3))]
    return Func(m.group(2), ret, params, item.lineno)


class Header:
    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        self.items = tokenize(self.text)
        ver = {}
        for part in ("MAJOR", "MINOR", "PATCH"):
            m = re.search(r"^#define RINGFIBER_VERSION_%s (\d+)$" % part,
                          self.text, re.M)
            if not m:
                raise SyntaxError("no RINGFIBER_VERSION_%s" % part)
            ver[part] = m.group(1)
        self.version = "%s.%s.%s" % (ver["MAJOR"], ver["MINOR"], ver["PATCH"])
        self.top = None  # the first comment: the conventions
        self.sections = []
        self.funcs = []  # documented public functions, header order
        self.undocumented = []  # (name, line)
        self.warnings = []  # "line: text"
        self.types = {}  # typedef name -> Chunk, item
        self.macros = {}  # macro name -> Chunk
        self._build()

    def _build(self):
        items = self.items
        section = Section("Basics")
        self.sections.append(section)
        subtitle = None
        i = 0
        n = len(items)
        first_comment = True

        def is_rule(k):
            return (0 <= k < n and items[k].kind == "comment"
                    and len(items[k].lines) == 1
                    and RULE.match(items[k].lines[0].strip()))

        while i < n:
            it = items[i]
            if it.kind == "blank":
                i += 1
                continue
            if it.kind == "comment" and first_comment:
                first_comment = False
                self.top = it
                i += 1
                continue
            if it.kind == "comment" and is_rule(i):
                i += 1
                continue
            if (it.kind == "comment" and len(it.lines) == 1
                    and (is_rule(i - 1) or is_rule(i + 1))):
                title = ONE_LINE.match(it.lines[0].strip()).group(1)
                section = Section(title)
                self.sections.append(section)
                subtitle = None
                i += 1
                continue
            if it.kind == "comment" and len(it.lines) == 1 and \
                    SUBTITLE.match(it.lines[0].strip()):
                subtitle = SUBTITLE.match(it.lines[0].strip()).group(1)
                i += 1
                continue
            comment = None
            if it.kind == "comment":
                comment = it
                i += 1
            body = []
            while i < n and items[i].kind not in ("blank", "comment"):
                body.append(items[i])
                i += 1
            if comment is not None and not body and section.chunks:
                # A comment on its own, after the section's first chunk:
                # a note on the declarations above it.
                section.chunks[-1].notes.append(comment)
                continue
            chunk = Chunk(comment, body, section, subtitle)
            section.chunks.append(chunk)
            self._chunk(chunk)

    def _chunk(self, chunk):
        section = chunk.section
        decls = [x for x in chunk.items
                 if x.kind == "code" and x.text.lstrip().startswith("RF_API")]
        has_struct = any(x.kind == "code" and "{" in strip_comments(x.text)
                         for x in chunk.items)
        if (chunk.comment is not None and not decls and not has_struct
                and section.intro is None and not section.chunks[:-1]
                and not section.groups):
            section.intro = chunk
            section.intro_reaches_next = bool(
                re.search(r"this\s+section\s+and\s+the\s+next",
                          chunk.comment.text))
        for x in chunk.items:
            m = re.match(r"#\s*define\s+((?:RF|RINGFIBER)_\w+)", x.text.lstrip())
            if x.kind == "pp" and m and m.group(1) not in ("RF_API",
                                                           "RINGFIBER_H"):
                self.macros[m.group(1)] = chunk
            if x.kind == "code" and x.text.lstrip().startswith("typedef"):
                name = typedef_name(x)
                if name:
                    self.types[name] = (chunk, x)
        if not decls:
            return
        funcs = []
        for d in decls:
            try:
                funcs.append(parse_decl(d))
            except SyntaxError as e:
                # No page: the check reports the function.
                self.warnings.append("%d: %s" % (d.lineno, e))
        public = [f for f in funcs if not f.name.startswith("rf__")]
        if not public:
            return
        if chunk.comment is None:
            for f in public:
                self.undocumented.append((f.name, f.lineno))
            return
        g = Group(chunk.comment, section, chunk.subtitle)
        g.funcs = public
        g.extra = [x for x in chunk.items
                   if (x.kind == "pp" and re.match(r"#\s*define\s", x.text))
                   or (x.kind == "code" and x.text.lstrip().startswith(
                       "typedef") and "{" not in x.text)]
        for f in public:
            f.group = g
        section.groups.append(g)
        self.funcs.extend(public)


def typedef_name(item):
    s = " ".join(strip_comments(item.text).split())
    m = re.search(r"\(\s*\*\s*(\w+)\s*\)\s*\(", s)
    if m:
        return m.group(1)
    m = re.search(r"(\w+)\s*;$", s)
    return m.group(1) if m else None


# ---------------------------------------------------------------- writing

def esc(s):
    """Text for a roff line (not a request)."""
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return s


def line_out(s):
    return "\\&" + s if s[:1] in (".", "'") else s


def first_sentence(text):
    text = " ".join(text.split())
    m = re.search(r"[.!?](?=\s|$)", text)
    s = text[:m.start()] if m else text
    return s.strip()


PAREN = r"\s\((?:[^()]|\w\([^()]*\))*\)"


def short(s, limit=100):
    """A summary for NAME: the comment's first sentence, shortened when
    it is long by dropping parenthesized asides, then by keeping what
    comes before its colon ("Multishot accept for servers: ...") or its
    first clauses."""
    s = s.rstrip(":")
    if len(s) <= limit:
        return s
    t = re.sub(PAREN + r"$", "", s)
    if len(t) <= limit:
        return t
    t = re.sub(PAREN, "", s)
    if len(t) <= limit:
        return t
    head, colon, _ = t.partition(": ")
    if colon and len(head.split()) >= 4 and len(head) <= limit:
        return head
    cut = max(t.rfind(", ", 0, limit), t.rfind("; ", 0, limit))
    return t[:cut] if cut > 15 else t


class Writer:
    def __init__(self, header):
        self.h = header
        self.names = {f.name for f in header.funcs}
        self.name_re = re.compile(r"\b(rf_[a-z0-9_]+)\b")

    # -- inline text
    def inline(self, s):
        s = esc(s)

        def repl(m):
            name = m.group(1)
            if name in self.names:
                return "\\fB%s\\fP" % name
            return name

        return self.name_re.sub(repl, s)

    def text_lines(self, lines):
        return [line_out(self.inline(l)) for l in lines]

    def blocks(self, blocks, out):
        """Appends a comment's blocks; a paragraph or a code block after
        another block starts with .PP (which also ends a list's indent)."""
        for k, (kind, body) in enumerate(blocks):
            if kind == "p":
                if k:
                    out.append(".PP")
                out.extend(self.text_lines(body))
            elif kind == "code":
                if k:
                    out.append(".PP")
                out.append(".RS 4")
                out.append(".nf")
                for l in body:
                    out.append(line_out(esc(l)) if l else "")
                out.append(".fi")
                out.append(".RE")
            elif kind in ("ul", "ol"):
                for tag, lines in body:
                    if kind == "ul":
                        out.append(".IP \\(bu 2")
                    else:
                        out.append(".IP %s 4" % tag)
                    out.extend(self.text_lines(lines))
            elif kind == "dl":
                for tag, lines in body:
                    if tag:
                        out.append(".TP")
                        out.append(line_out("\\fB%s\\fP" % esc(tag)))
                    else:
                        out.append(".PP")
                    out.extend(self.text_lines(lines))
        return out

    # -- pieces
    def th(self, title):
        # No hyphenation, which would split identifiers; ragged right, so
        # that long identifiers do not stretch the spaces of their lines.
        return ['.TH %s 3 "" "ringfiber %s" "ringfiber manual"'
                % (title, self.h.version), ".nh", ".ad l"]

    def head_comment(self, name):
        return ['.\\" %s(3): generated by tools/manpages.py from '
                'include/ringfiber.h.' % name,
                '.\\" Edit the header\'s comments, not this file.']

    def synopsis_lib(self, out):
        out.append(".SH SYNOPSIS")
        out.append(".nf")
        out.append(".B #include <ringfiber.h>")

    def library(self, out):
        out.append(".SH LIBRARY")
        out.append("ringfiber (\\fIlibringfiber\\fP, \\fI\\-lringfiber\\fP);"
                   " compile and link with")
        out.append(".RS 4")
        out.append(".nf")
        out.append("cc ... $(pkg\\-config \\-\\-cflags \\-\\-libs ringfiber)")
        out.append(".fi")
        out.append(".RE")
        out.append(".PP")
        out.append("or, in CMake, \\fBfind_package(ringfiber)\\fP and the target"
                   " \\fBringfiber::ringfiber\\fP.")

    def proto_lines(self, f):
        """.BI lines: types in bold, parameter names in italics; one line
        per parameter when the whole does not fit in 70 columns."""
        sep = "" if f.ret.endswith("*") else " "
        lead = "%s%s%s(" % (f.ret, sep, f.name)
        params = f.params or ["void"]
        pieces = []
        for p in params:
            m = re.match(r"^(.*?)(\w+)((?:\[[^\]]*\])*)$", p)
            if p in ("void", "...") or not m or not m.group(1).strip():
                pieces.append((p, "", ""))
            else:
                pieces.append((m.group(1), m.group(2), m.group(3)))
        one = lead + ", ".join(params) + ");"
        lines = []
        if len(one) <= 70:
            groups = [pieces]
        else:
            groups = [[p] for p in pieces]
        for gi, grp in enumerate(groups):
            args = []
            prefix = lead if gi == 0 else " " * len(lead)
            bold = prefix
            for pi, (ty, name, suffix) in enumerate(grp):
                last_in_all = gi == len(groups) - 1 and pi == len(grp) - 1
                end = ");" if last_in_all else ","
                if not name:
                    bold += ty + end
                    if not last_in_all and len(groups) == 1:
                        bold += " "
                    continue
                args.append('"%s"' % esc(bold + ty))
                args.append(esc(name))
                bold = suffix + end
                if not last_in_all and len(groups) == 1:
                    bold += " "
            if bold:
                args.append('"%s"' % esc(bold))
            if len(args) == 1:
                lines.append(".B %s" % args[0])
            else:
                lines.append(".BI " + " ".join(args))
        return lines

    def code_block(self, items, out):
        """Declarations verbatim, comments included."""
        out.append(".nf")
        for item in items:
            for l in item.lines:
                out.append(line_out(esc(l.rstrip())) if l.strip() else "")
        out.append(".fi")

    def refs(self, g):
        """Functions and system pages a group's comment names."""
        text = g.comment.text
        funcs = []
        for m in self.name_re.finditer(text):
            nm = m.group(1)
            if nm in self.names and nm not in funcs and \
                    nm not in [f.name for f in g.funcs]:
                funcs.append(nm)
        sysrefs = []
        for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\(([237])\)", text):
            r = (m.group(1), m.group(2))
            if r not in sysrefs and not r[0].startswith("rf_"):
                sysrefs.append(r)
        return funcs, sysrefs

    def types_of(self, g):
        """Typedefs with a body (structs, function types) that the group's
        prototypes use, and those these use in turn."""
        seen = []
        todo = [" ".join([f.prototype() for f in g.funcs])]
        while todo:
            text = strip_comments(todo.pop(0))
            for m in re.finditer(r"\b(\w+)\b", text):
                nm = m.group(1)
                if nm in self.h.types and nm not in seen:
                    chunk, item = self.h.types[nm]
                    body = item.text
                    if "{" not in body and "(*" not in body.replace(" ", ""):
                        continue
                    seen.append(nm)
                    todo.append(body)
        return seen

    def constants_of(self, g, types):
        """The chunks that define the constants the group's comment or its
        types name ("RF_LOOP_*" names every RF_LOOP_ constant), in header
        order, the group's own chunk left out."""
        text = g.comment.text + " ".join(self.h.types[t][1].text
                                         for t in types)
        chunks = []
        for m in re.finditer(r"\b((?:RF|RINGFIBER)_[A-Z0-9_]*)(\*?)", text):
            name, star = m.groups()
            if star:
                names = [n for n in self.h.macros if n.startswith(name)]
            else:
                names = [name] if name in self.h.macros else []
            for n in names:
                c = self.h.macros[n]
                if c.comment is not g.comment and c not in chunks:
                    chunks.append(c)
        order = {id(c): k for k, c in enumerate(
            c for s in self.h.sections for c in s.chunks)}
        return sorted(chunks, key=lambda c: order[id(c)])

    def funcs_of(self, chunk):
        """The functions declared in a chunk."""
        return [f for g in chunk.section.groups if g.comment is chunk.comment
                for f in g.funcs] if chunk.comment is not None else []

    def see_funcs(self, funcs, out):
        """Declared with functions: their pages say the rest."""
        out.append("With")
        for k, f in enumerate(funcs):
            sep = "," if k < len(funcs) - 1 else ":"
            out.append(".BR %s (3)%s" % (f.name, sep))

    def summary(self, g):
        s = short(self._summary(g))
        if len(s) < 25 and g.subtitle and g.subtitle not in s:
            s += "; " + g.subtitle
        return s

    def _summary(self, g):
        blocks = g.blocks
        text = ""
        if blocks and blocks[0][0] == "p":
            text = first_sentence(" ".join(blocks[0][1]))
        if not text or re.match(r"^(Returns?|Errors)\b", text):
            f = g.funcs[0]
            for p in f.params:
                m = re.match(r"^(?:const\s+)?(\w+)\s*\*", p)
                if m and m.group(1) in self.h.types:
                    chunk, _ = self.h.types[m.group(1)]
                    if chunk.comment is not None:
                        b = parse_blocks(comment_text(chunk.comment))
                        if b and b[0][0] == "p":
                            text = first_sentence(" ".join(b[0][1]))
                            break
            else:
                text = g.subtitle or g.section.title
            if not text:
                text = g.subtitle or g.section.title
        return text

    # -- a function's page
    def page(self, f):
        g = f.group
        out = self.head_comment(f.name)
        out += self.th(f.name)
        out.append(".SH NAME")
        out.append("%s \\- %s" % (f.name, esc(self.summary(g))))
        self.synopsis_lib(out)
        for x in g.extra:
            out.append(".PP")
            for l in strip_comments(x.text).split("\n"):
                if l.strip():
                    out.append(".B %s" % quote_arg(esc(l.strip())))
        out.append(".PP")
        for h in g.funcs:
            out.extend(self.proto_lines(h))
        out.append(".fi")
        self.library(out)
        out.append(".SH DESCRIPTION")
        self.blocks(g.blocks, out)
        types = self.types_of(g)
        if types:
            out.append(".SH TYPES")
            for i, nm in enumerate(types):
                chunk, item = self.h.types[nm]
                if i:
                    out.append(".PP")
                if chunk.comment is not None:
                    self.blocks(parse_blocks(comment_text(chunk.comment)), out)
                    out.append(".PP")
                self.code_block([item], out)
        consts = self.constants_of(g, types)
        if consts:
            out.append(".SH CONSTANTS")
            for i, c in enumerate(consts):
                if i:
                    out.append(".PP")
                funcs = self.funcs_of(c)
                if funcs:
                    self.see_funcs(funcs, out)
                    out.append(".PP")
                elif c.comment is not None and c is not c.section.intro:
                    self.blocks(parse_blocks(comment_text(c.comment)), out)
                    out.append(".PP")
                self.code_block([x for x in c.items if x.kind == "pp"
                                 and re.match(r"#\s*define\s", x.text)], out)
                for note in c.notes:
                    out.append(".PP")
                    self.blocks(parse_blocks(comment_text(note)), out)
        intros = []
        sections = self.h.sections
        k = sections.index(g.section)
        if g.section.intro is not None:
            intros.append(g.section)
        if k > 0 and sections[k - 1].intro is not None and \
                sections[k - 1].intro_reaches_next:
            intros.append(sections[k - 1])
        out.append(".SH NOTES")
        for s in intros:
            out.append(".SS %s" % quote_arg(esc(s.title)))
            self.blocks(parse_blocks(comment_text(s.intro.comment)), out)
        if intros:
            out.append(".SS Conventions")
        out.append("The conventions that hold for every function (errors,"
                   " suspension, threads, cancellation, stale handles)"
                   " are in")
        out.append(".BR ringfiber (3).")
        funcs, sysrefs = self.refs(g)
        see = [h.name for h in g.funcs if h is not f] + funcs
        out.append(".SH SEE ALSO")
        entries = [(nm, "3") for nm in see] + [("ringfiber", "3")] + sysrefs
        for i, (nm, sec) in enumerate(entries):
            comma = "," if i < len(entries) - 1 else ""
            out.append(".BR %s (%s)%s" % (esc(nm), sec, comma))
        return "\n".join(out) + "\n"

    # -- the overview
    def overview(self):
        h = self.h
        out = self.head_comment("ringfiber")
        out += self.th("ringfiber")
        top = parse_blocks(comment_text(h.top))
        title = ""
        if top and top[0][0] == "p":
            title = first_sentence(" ".join(top[0][1]))
            title = re.sub(r"^ringfiber:\s*", "", title)
            rest = " ".join(top[0][1])
            rest = rest[len(first_sentence(rest)) + 1:].strip()
            top = ([("p", [rest])] if rest else []) + top[1:]
        out.append(".SH NAME")
        out.append("ringfiber \\- %s" % esc(title))
        self.synopsis_lib(out)
        out.append(".fi")
        self.library(out)
        out.append(".SH DESCRIPTION")
        self.blocks(top, out)
        out.append(".PP")
        out.append("Each function has its page, \\fBman 3 rf_spawn\\fP say,"
                   " made from its comment in the header. The sections below"
                   " follow the header's: each lists its functions, then its"
                   " types and constants as the header declares them.")
        out.append("Names that start with \\fBrf__\\fP (the header's section"
                   " \\(lqFast path\\(rq) are not API: they may change in any"
                   " release, and have no pages.")
        for s in h.sections:
            if s.title.startswith("Fast path"):
                continue
            chunks = [c for c in s.chunks if c is not s.intro and
                      overview_chunk(c)]
            if not s.groups and not chunks and s.intro is None:
                continue
            out.append(".SH %s" % quote_arg(esc(s.title.upper())))
            if s.intro is not None:
                self.blocks(parse_blocks(comment_text(s.intro.comment)), out)
                if s.intro.items:
                    out.append(".PP")
                    self.code_block(s.intro.items, out)
            if s.groups:
                out.append(".SS Functions")
                sub = None
                for g in s.groups:
                    if g.subtitle != sub and g.subtitle:
                        out.append(".PP")
                        out.append("\\fI%s\\fP" % esc(g.subtitle))
                    sub = g.subtitle
                    out.append(".TP")
                    args = []
                    for k, f in enumerate(g.funcs):
                        args.append(f.name)
                        args.append('"(3), "' if k < len(g.funcs) - 1
                                    else "(3)")
                    out.append(".BR " + " ".join(args))
                    out.append(line_out(esc(self.summary(g))))
            if chunks:
                out.append(".SS \"Types and constants\"")
                first = True
                sub = None
                for c in chunks:
                    if c.subtitle != sub and c.subtitle:
                        out.append(".PP")
                        out.append("\\fI%s\\fP" % esc(c.subtitle))
                        first = False
                    sub = c.subtitle
                    funcs = self.funcs_of(c)
                    if funcs:
                        if not first:
                            out.append(".PP")
                        self.see_funcs(funcs, out)
                        first = False
                    elif c.comment is not None:
                        if not first:
                            out.append(".PP")
                        self.blocks(parse_blocks(comment_text(c.comment)), out)
                        first = False
                    code = [x for x in c.items if x.kind in ("code", "pp")
                            and not x.text.lstrip().startswith("RF_API")
                            and not re.match(r"#\s*(if|endif|else|elif)",
                                             x.text.lstrip())]
                    if code:
                        if not first:
                            out.append(".PP")
                        self.code_block(code, out)
                        first = False
                    for note in c.notes:
                        out.append(".PP")
                        self.blocks(parse_blocks(comment_text(note)), out)
        out.append(".SH SEE ALSO")
        names = [f.name for f in h.funcs]
        for i, nm in enumerate(names + ["io_uring"]):
            sec = "7" if nm == "io_uring" else "3"
            comma = "," if i < len(names) else ""
            out.append(".BR %s (%s)%s" % (nm, sec, comma))
        return "\n".join(out) + "\n"


def overview_chunk(c):
    """A chunk of types or constants worth showing in ringfiber(3)."""
    for x in c.items:
        t = x.text.lstrip()
        if x.kind == "code" and t.startswith("typedef"):
            return True
        if x.kind == "pp" and re.match(r"#\s*define\s+(RF_|RINGFIBER_)", t) \
                and not re.match(r"#\s*define\s+RF_API\b", t) \
                and not re.match(r"#\s*define\s+RINGFIBER_H\b", t):
            return True
    return False


def quote_arg(s):
    return '"%s"' % s if " " in s else s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--header", required=True)
    ap.add_argument("--out", required=True, help="directory for the .3 files")
    ap.add_argument("--stamp", help="file to touch once the pages are written")
    args = ap.parse_args()

    try:
        h = Header(args.header)
    except SyntaxError as e:
        print("%s: %s" % (args.header, e), file=sys.stderr)
        return 1
    w = Writer(h)
    pages = {"ringfiber.3": w.overview()}
    for f in h.funcs:
        pages[f.name + ".3"] = w.page(f)
    for w_ in h.warnings:
        print("%s:%s" % (args.header, w_), file=sys.stderr)
    for name, line in h.undocumented:
        print("%s:%d: warning: %s has no comment above its declaration, so"
              " it gets no manual page" % (args.header, line, name),
              file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    for fn in sorted(os.listdir(args.out)):
        if fn.endswith(".3") and fn not in pages:
            os.remove(os.path.join(args.out, fn))
    for fn, text in sorted(pages.items()):
        path = os.path.join(args.out, fn)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    if args.stamp:
        with open(args.stamp, "w", encoding="utf-8") as f:
            f.write("%d pages\n" % len(pages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
