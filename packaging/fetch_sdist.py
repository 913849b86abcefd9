"""Download a package's source distribution from PyPI, checked against the SHA-256 digest PyPI lists for it.

    python packaging/fetch_sdist.py NAME VERSION FOLDER        prints the path of the .tar.gz (kept if already there)

`pip download --no-binary` would do it, but pip first reads the package's metadata from the sdist, and a package
built with meson-python (NumPy) has no cheaper way to give it than compiling the whole package.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/simple"
INDEX_JSON = "application/vnd.pypi.simple.v1+json"  # the index's JSON form (PEP 691), as pip reads it


def sdist_entry(project: dict, name: str, version: str) -> dict:
    """The source distribution of this version among a project's files on the index (named as PEP 625 says)."""
    filename = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.tar.gz"
    for entry in project["files"]:
        if entry["filename"].lower() == filename and not entry.get("yanked"):
            return entry
    raise SystemExit(f"{name} {version}: PyPI has no source distribution {filename}")


def fetch(name: str, version: str, folder: Path) -> Path:
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": INDEX_JSON})
    with urllib.request.urlopen(request) as response:
        entry = sdist_entry(json.load(response), name, version)
    path = folder / entry["filename"]
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        with urllib.request.urlopen(entry["url"]) as response, partial.open("wb") as file:
            while chunk := response.read(1 << 20):
                file.write(chunk)
        partial.rename(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["hashes"]["sha256"]:
        path.unlink()
        raise SystemExit(f"{path}: SHA-256 {digest} is not the {entry['hashes']['sha256']} PyPI lists; removed")
    return path


def main() -> int:
    name, version, folder = sys.argv[1:]
    print(fetch(name, version, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
