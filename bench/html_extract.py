"""HTML text extraction: how much of a page's main content each extractor keeps, how much
boilerplate it lets through, and how fast (issue 24, item 3).

    python -m bench.html_extract [--other-python /tmp/traf/bin/python] [--rust-pages 60]

Pages: real documentation that packages on the CI machine image ship, each set with the
element that holds its main content (the reference): Node.js API docs (`#apicontent`),
npm's docs (`#content` without its table of contents), Rust's std docs (`#main-content`,
a sample), Valgrind's manual (the page without its navigation bars). A set whose folder is
missing is skipped. Per page the reference text is the reference element's text; an
extractor's output is scored on word counts: recall (share of the reference's words it
keeps), precision (share of its words that are in the reference), and MB/s of HTML.

Contenders: corpusmill (`corpusmill.sources.html`, lexbor via selectolax) always; with
`--other-python`, a Python that has them installed (kept out of `.venv`):
`python3 -m venv /tmp/traf && /tmp/traf/bin/pip install trafilatura lxml_html_clean
resiliparse html5lib`: trafilatura (defaults, and favor_recall), resiliparse's main-content
extractor, and html5lib's parse alone (speed only: the pure-Python HTML5 parser).

Results are printed and written to bench/out/html_extract.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import random
import re
import subprocess
import time
from pathlib import Path

from bench.report import save
from corpusmill.sources.html import html_to_text

REPO = Path(__file__).resolve().parents[1]
RUST = "/root/.rustup/toolchains/stable-*/share/doc/rust/html/std"
SITES = {  # name -> (glob, reference selector, selectors removed from the reference)
    "nodejs": ("/usr/share/doc/nodejs/api/*.html", "#apicontent", []),
    "npm": ("/usr/lib/node_modules/npm/docs/output/*/*.html", "#content", ["#table_of_contents"]),
    "rustdoc": ("", "#main-content", []),
    "valgrind": ("/usr/share/doc/valgrind/html/*.html", "body", [".navheader", ".navfooter"]),
}
_WORD = re.compile(r"\w+")

OTHER = r"""
import json, sys, time
paths = json.load(sys.stdin)
fns = {}
try:
    import trafilatura
    fns["trafilatura"] = lambda h: trafilatura.extract(h) or ""
    fns["trafilatura, favor_recall"] = lambda h: trafilatura.extract(h, favor_recall=True) or ""
except ImportError:
    pass
try:
    from resiliparse.extract.html2text import extract_plain_text
    fns["resiliparse, main_content"] = lambda h: extract_plain_text(h, main_content=True)
except ImportError:
    pass
try:
    import html5lib
    fns["html5lib parse only (speed)"] = lambda h: (html5lib.parse(h), "")[1]
except ImportError:
    pass
out = {}
for name, fn in fns.items():
    texts, secs = {}, {}
    for p in paths:
        h = open(p, encoding="utf-8", errors="replace").read()
        t0 = time.perf_counter(); texts[p] = fn(h); secs[p] = time.perf_counter() - t0
    out[name] = {"texts": texts, "seconds": secs}
json.dump(out, sys.stdout)
"""


def pages(rust_pages: int) -> dict[str, list[str]]:
    found = {}
    for site, (pattern, _, _) in SITES.items():
        if site == "rustdoc":
            roots = sorted(glob.glob(RUST))
            paths = []
            if roots:
                paths = sorted(glob.glob(f"{roots[0]}/*/index.html"))
                paths += sorted(glob.glob(f"{roots[0]}/*/struct.*.html"))
                paths = random.Random(0).sample(paths, min(rust_pages, len(paths)))
        else:
            paths = sorted(glob.glob(pattern))
        if paths:
            found[site] = paths
    return found


def reference(html: str, selector: str, drop: list[str]) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for sel in [*drop, "script", "style"]:
        for node in tree.css(sel):
            node.decompose()
    node = tree.css_first(selector)
    return node.text(separator=" ") if node is not None else ""


def words(text: str) -> collections.Counter:
    return collections.Counter(_WORD.findall(text.lower()))


def score(run: dict, site_pages: list[str], site: str) -> dict:
    _, selector, drop = SITES[site]
    kept = ref_total = out_total = n_bytes = 0
    worst = 1.0
    texts = run["texts"]
    seconds = sum(run["seconds"][p] for p in site_pages)
    for path in site_pages:
        html = Path(path).read_text("utf-8", errors="replace")
        n_bytes += len(html.encode())
        ref, got = words(reference(html, selector, drop)), words(texts[path])
        common = sum((ref & got).values())
        kept += common
        ref_total += sum(ref.values())
        out_total += sum(got.values())
        worst = min(worst, common / max(1, sum(ref.values())))
    return {
        "pages": len(site_pages),
        "recall": round(kept / max(1, ref_total), 3),
        "worst_page_recall": round(worst, 3),
        "precision": round(kept / max(1, out_total), 3),
        "mb_per_s": round(n_bytes / seconds / 1e6, 2) if seconds else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--other-python", help="a Python with trafilatura/resiliparse/html5lib")
    ap.add_argument("--rust-pages", type=int, default=60)
    args = ap.parse_args()
    found = pages(args.rust_pages)
    every = [p for ps in found.values() for p in ps]
    runs: dict[str, dict] = {}
    texts, secs = {}, {}
    for path in every:
        html = Path(path).read_text("utf-8", errors="replace")
        t0 = time.perf_counter()
        texts[path] = html_to_text(html)
        secs[path] = time.perf_counter() - t0
    runs["corpusmill (lexbor)"] = {"texts": texts, "seconds": secs}
    if args.other_python:
        res = subprocess.run(
            [args.other_python, "-c", OTHER],
            input=json.dumps(every),
            capture_output=True,
            text=True,
            check=True,
        )
        runs.update(json.loads(res.stdout))
    results: dict = {}
    print(
        f"{'extractor':<30} {'site':<9} {'pages':>5} {'recall':>7} {'worst':>6} {'prec.':>6} {'MB/s':>6}"
    )
    for name, run in runs.items():
        for site, site_pages in found.items():
            row = score(run, site_pages, site)
            if "speed" in name:
                row = {"pages": row["pages"], "mb_per_s": row["mb_per_s"]}
            results.setdefault(name, {})[site] = row
            print(
                f"{name:<30} {site:<9} {row['pages']:>5} {row.get('recall', '-'):>7} "
                f"{row.get('worst_page_recall', '-'):>6} {row.get('precision', '-'):>6} "
                f"{row['mb_per_s']:>6}"
            )
    save("html_extract", results)


if __name__ == "__main__":
    main()
