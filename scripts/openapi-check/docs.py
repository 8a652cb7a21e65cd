#!/usr/bin/env python3
"""docs/api.md and /openapi.json name the same endpoints.

Usage: docs.py BASE_URL [docs/api.md]

Every `METHOD /path` that docs/api.md writes (in backticks: `GET /v1/jobs`,
`GET|PATCH /v1/x/{id}`) must be an operation of the server's /openapi.json,
and every operation there must be written in docs/api.md. Sections whose
first lines say "Planned: not served" describe what this build does not
serve yet and are skipped. A few pages are served outside the OpenAPI
document on purpose (the document itself, the API page, the dashboard):
they must answer 200 instead. Exits 1 listing every difference.
"""
import json
import re
import sys
import urllib.request

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ENDPOINT = re.compile(r"`((?:%s)(?:\|(?:%s))*) (/[^`\s?]*)" % ("|".join(METHODS), "|".join(METHODS)))
PLANNED = "Planned: not served"
# Served by the binary but not API operations, so not in the OpenAPI document.
OUTSIDE = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/")}


def documented(text):
    """(method, path) pairs written in the markdown, skipping planned sections."""
    found = set()
    skip_level = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"^(#+) ", line)
        if heading:
            level = len(heading.group(1))
            if skip_level is not None and level <= skip_level:
                skip_level = None
            following = "\n".join(lines[i + 1 : i + 4])
            if PLANNED in following:
                skip_level = level
            continue
        if skip_level is not None:
            continue
        for methods, path in ENDPOINT.findall(line):
            path = path.rstrip(".,;:)")
            for m in methods.split("|"):
                found.add((m, path))
    return found


def served(doc):
    return {
        (m.upper(), path)
        for path, item in doc["paths"].items()
        for m in item
        if m.upper() in METHODS
    }


def main():
    base = sys.argv[1].rstrip("/")
    md = sys.argv[2] if len(sys.argv) > 2 else "docs/api.md"
    with open(md, encoding="utf-8") as f:
        docs = documented(f.read())
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as r:
        api = served(json.load(r))
    problems = []
    for m, p in sorted((docs - OUTSIDE) - api):
        problems.append(f"{md} documents {m} {p}, which /openapi.json does not have")
    for m, p in sorted(api - docs):
        problems.append(f"/openapi.json has {m} {p}, which {md} does not document")
    for m, p in sorted(OUTSIDE):
        if (m, p) not in docs:
            problems.append(f"{md} does not document {m} {p}")
        try:
            with urllib.request.urlopen(base + p, timeout=10) as r:
                if r.status != 200:
                    problems.append(f"{m} {p} answered {r.status}")
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            problems.append(f"{m} {p} failed: {e}")
    if problems:
        print("docs/api.md and /openapi.json differ:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"docs/api.md and /openapi.json agree on {len(api)} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
