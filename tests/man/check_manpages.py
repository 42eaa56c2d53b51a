#!/usr/bin/env python3
"""Checks the generated manual pages against the header.

usage: check_manpages.py --header include/ringfiber.h --pages BUILD/man/man3
       check_manpages.py --header include/ringfiber.h --generator
           tools/manpages.py --self-test

For every public function of the header (RF_API; rf__ names are not API):
 - PAGES/<name>.3 exists; a function without a comment above its
   declaration has none, which fails here;
 - its NAME line is "<name> \\- <summary>", the summary not empty;
 - its SYNOPSIS holds the function's prototype exactly as the header
   declares it (spacing aside), and #include <ringfiber.h>;
 - its DESCRIPTION has text;
 - ringfiber.3 exists and lists it.
Also: no page is left for a function the header no longer declares, and,
where groff is installed, every page formats without a warning
(groff -man -ww).

The header is read here on its own terms (comments and preprocessor lines
dropped, then every "RF_API ...;" statement), not with the generator's
parser, so that a fault in the generator cannot hide a function.

--self-test runs the generator on altered copies of the header and checks
that this check fails for each: a comment removed, a function added
without one, an empty comment, a page whose prototype differs.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile


def public_decls(text):
    """{name: normalized declaration} of the header's RF_API functions."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"),
                  text, flags=re.S)
    kept = []
    cont = False
    for line in text.split("\n"):
        if cont or line.lstrip().startswith("#"):
            cont = line.rstrip().endswith("\\")
            kept.append("")
            continue
        kept.append(line)
    text = "\n".join(kept)
    decls = {}
    for m in re.finditer(r"\bRF_API\b\s+([^;{}]*?)\s*;", text):
        decl = m.group(1)
        nm = re.search(r"(\w+)\s*\(", decl)
        if not nm:
            continue
        line = text.count("\n", 0, m.start()) + 1
        decls[nm.group(1)] = (norm(decl + ";"), line)
    return {k: v for k, v in decls.items() if not k.startswith("rf__")}


def norm(s):
    s = " ".join(s.split())
    return re.sub(r"\s*([(),*\[\];])\s*", r"\1", s)


def roff_args(s):
    """The arguments of a roff request line (after the request name)."""
    args = []
    i = 0
    n = len(s)
    while i < n:
        while i < n and s[i] == " ":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            cur = ""
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        cur += '"'
                        i += 2
                        continue
                    i += 1
                    break
                cur += s[i]
                i += 1
            args.append(cur)
        else:
            j = i
            while j < n and s[j] != " ":
                j += 1
            args.append(s[i:j])
            i = j
    return args


def unescape(s):
    s = re.sub(r"\\f[BIRP]", "", s)
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\(bu", "*")
    s = s.replace("\\(lq", '"').replace("\\(rq", '"')
    return s.replace("\\e", "\\")


def page_sections(text):
    """{section name: [text lines]}, font requests turned into text."""
    sections = {}
    cur = None
    for line in text.split("\n"):
        if line.startswith(".SH"):
            args = roff_args(line[3:])
            cur = " ".join(args)
            sections[cur] = []
            continue
        if cur is None:
            continue
        m = re.match(r"^\.(B|I|BI|IB|BR|RB|IR|RI)\s(.*)$", line)
        if m:
            # .B and .I join their arguments with spaces, the alternating
            # ones (.BI, .BR, ...) with nothing.
            sep = " " if len(m.group(1)) == 1 else ""
            sections[cur].append(unescape(sep.join(roff_args(m.group(2)))))
        elif line.startswith(".") or line.startswith("'"):
            continue
        else:
            sections[cur].append(unescape(line))
    return sections


def check(header, pages, lint=True):
    """The problems found (lines of text), the number of public functions,
    and the groff used to check the formatting (None: not checked)."""
    problems = []
    with open(header, encoding="utf-8") as f:
        decls = public_decls(f.read())
    if not decls:
        return ["%s: no RF_API function found" % header]
    hdr = os.path.basename(header)

    overview = os.path.join(pages, "ringfiber.3")
    listed = ""
    if not os.path.isfile(overview):
        problems.append("ringfiber.3: missing")
    else:
        with open(overview, encoding="utf-8") as f:
            listed = f.read()

    for name, (decl, line) in sorted(decls.items(), key=lambda kv: kv[1][1]):
        path = os.path.join(pages, name + ".3")
        where = "%s (%s:%d)" % (name, hdr, line)
        if not os.path.isfile(path):
            problems.append("%s: no page; a public function needs a comment"
                            " directly above its declaration (or above the"
                            " declarations it is grouped with)" % where)
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        secs = page_sections(text)
        nm = " ".join(secs.get("NAME", []))
        m = re.match(r"^(\S+) - (.*\S)", nm)
        if not m or m.group(1) != name:
            problems.append("%s: NAME is not '%s \\- summary': %r"
                            % (where, name, nm))
        syn = secs.get("SYNOPSIS", [])
        if "#include <ringfiber.h>" not in syn:
            problems.append("%s: SYNOPSIS lacks #include <ringfiber.h>" % where)
        code = " ".join(l for l in syn if not l.lstrip().startswith("#"))
        protos = [norm(p + ";") for p in code.split(";")]
        mine = [p for p in protos if re.search(r"\b%s\(" % re.escape(name), p)]
        if decl not in mine:
            problems.append("%s: SYNOPSIS does not match the header:\n"
                            "    header:   %s\n    SYNOPSIS: %s"
                            % (where, decl, " | ".join(mine) or "(none)"))
        desc = " ".join(secs.get("DESCRIPTION", [])).split()
        if not desc:
            problems.append("%s: DESCRIPTION is empty" % where)
        if listed and not re.search(r"^\.BR .*\b%s\b" % re.escape(name),
                                    listed, re.M):
            problems.append("%s: not listed in ringfiber.3" % where)

    for fn in sorted(os.listdir(pages)) if os.path.isdir(pages) else []:
        if fn.endswith(".3") and fn != "ringfiber.3" and fn[:-2] not in decls:
            problems.append("%s: a page for a function the header does not"
                            " declare" % fn)

    groff = shutil.which("groff") if lint else None
    files = sorted(os.path.join(pages, fn) for fn in os.listdir(pages)
                   if fn.endswith(".3")) if os.path.isdir(pages) else []
    if groff and files:
        # One run for all the pages; its warnings name the file and line.
        r = subprocess.run([groff, "-man", "-ww", "-z", "-Tutf8"] + files,
                           capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            problems.append("groff -man -ww: %s"
                            % (r.stderr.strip() or "exit %d" % r.returncode))
    return problems, len(decls), groff


def self_test(header, generator):
    """Each alteration of the header must make check() fail, naming the
    function concerned."""
    with open(header, encoding="utf-8") as f:
        orig = f.read()
    tmp = tempfile.mkdtemp(prefix="ringfiber-man-")
    failures = []
    try:
        def run(text, alter_page=None):
            h = os.path.join(tmp, "ringfiber.h")
            out = os.path.join(tmp, "man3")
            shutil.rmtree(out, ignore_errors=True)
            with open(h, "w", encoding="utf-8") as f:
                f.write(text)
            r = subprocess.run([sys.executable, generator, "--header", h,
                                "--out", out], capture_output=True, text=True)
            if r.returncode != 0:
                return ["generator failed: " + r.stderr]
            if alter_page:
                alter_page(out)
            return check(h, out, lint=False)[0]

        def expect(label, problems, needle):
            hits = [p for p in problems if needle in p]
            if not hits:
                failures.append("%s: the check did not report %r (it said: %s)"
                                % (label, needle, problems or "nothing"))
            else:
                print("ok: %s -> %s" % (label, hits[0].split("\n")[0]))

        base = run(orig)
        if base:
            failures.append("the unaltered header fails: %s" % base)

        # 1. The comment above rf_spawn (shared with rf_spawn_opts) removed.
        lines = orig.split("\n")
        at = next(i for i, l in enumerate(lines)
                  if re.match(r"^RF_API\s.*\brf_spawn\s*\(", l))
        end = at - 1
        while not lines[end].rstrip().endswith("*/"):
            end -= 1
        start = end
        while "/*" not in lines[start]:
            start -= 1
        text = "\n".join(lines[:start] + lines[end + 1:at] + lines[at:])
        probs = run(text)
        expect("comment above rf_spawn removed", probs, "rf_spawn (")
        expect("comment above rf_spawn removed", probs, "rf_spawn_opts (")

        # 2. A function added, after a blank line, without a comment.
        text = orig.replace("RF_API int rf_poll(int fd, unsigned events);\n",
                            "RF_API int rf_poll(int fd, unsigned events);\n\n"
                            "RF_API int rf_probe_undocumented(int fd);\n", 1)
        if text == orig:
            failures.append("cannot find rf_poll's declaration to add after")
        else:
            expect("function added without a comment", run(text),
                   "rf_probe_undocumented (")

        # 3. An empty comment above a function.
        text = orig.replace("RF_API int rf_poll(int fd, unsigned events);\n",
                            "RF_API int rf_poll(int fd, unsigned events);\n\n"
                            "/* */\nRF_API int rf_probe_empty(int fd);\n", 1)
        expect("function with an empty comment", run(text),
               "rf_probe_empty (")

        # 4. A page whose prototype differs from the header's.
        def alter(out):
            p = os.path.join(out, "rf_sleep.3")
            with open(p, encoding="utf-8") as f:
                t = f.read()
            with open(p, "w", encoding="utf-8") as f:
                f.write(t.replace("uint64_t", "uint32_t"))
        expect("a page's SYNOPSIS altered", run(orig, alter),
               "rf_sleep (")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAILED: " + f, file=sys.stderr)
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--header", required=True)
    ap.add_argument("--pages", help="the directory of the generated .3 files")
    ap.add_argument("--generator", help="tools/manpages.py, for --self-test")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        if not args.generator:
            ap.error("--self-test needs --generator")
        return self_test(args.header, args.generator)
    if not args.pages:
        ap.error("--pages is needed")
    problems, n, groff = check(args.header, args.pages)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("%d problem(s) in the manual pages of %s"
              % (len(problems), args.header), file=sys.stderr)
        return 1
    print("%d public functions, each with its page in %s%s"
          % (n, args.pages, "" if groff else
             " (groff not found: formatting not checked)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
