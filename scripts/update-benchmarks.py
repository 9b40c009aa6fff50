#!/usr/bin/env python3
"""Replaces one measured section of docs/BENCHMARKS.md (between <!-- NAME:start/end --> markers)
with a table read from stdin, stamped with the date and the script that measured it.

    update-benchmarks.py NAME "SCRIPT (details)" "## Heading if the section is new" < table.md
"""
import datetime
import re
import sys

name, source, heading = sys.argv[1:4]
table = sys.stdin.read().strip()
path = "docs/BENCHMARKS.md"
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
block = f"{start}\nMeasured {datetime.date.today().isoformat()} by {source}:\n\n{table}\n{end}"
if start in doc:
    doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
else:
    doc = doc.rstrip() + f"\n\n{heading}\n\n{block}\n"
open(path, "w").write(doc)
