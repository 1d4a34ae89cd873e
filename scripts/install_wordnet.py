"""Install WordNet 3.0 for NLTK from Debian's offline packages (METEOR needs it).

Debian's `wordnet-base` and `wordnet-sense-index` ship the database under /usr/share/wordnet but
not the `lexnames` file NLTK's reader opens first; its content is the table in the packaged
lexnames(5WN) man page, so it is generated from there rather than typed in.

Usage: python scripts/install_wordnet.py [NLTK_DATA_DIR]   (default: $NLTK_DATA or ~/nltk_data)
"""

import gzip
import os
import re
import shutil
import sys
from pathlib import Path

SOURCE = Path("/usr/share/wordnet")
MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames(5WN), "Syntactic Category"


def lexnames(man_page: Path) -> str:
    rows = re.findall(r"^(\d\d)\t(\w+\.\w+)\s*\t", gzip.decompress(man_page.read_bytes()).decode(), re.M)
    if len(rows) != 45:  # WordNet 3.0 has 45 lexicographer files
        raise SystemExit(f"expected 45 lexicographer files in {man_page}, found {len(rows)}")
    return "".join(f"{number}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for number, name in rows)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NLTK_DATA", Path.home() / "nltk_data"))
    target = root / "corpora" / "wordnet"
    if not (SOURCE / "data.noun").exists() or not MAN_PAGE.exists():
        raise SystemExit("WordNet not found: apt-get install wordnet-base wordnet-sense-index")
    target.mkdir(parents=True, exist_ok=True)
    for path in SOURCE.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    (target / "lexnames").write_text(lexnames(MAN_PAGE))
    print(f"WordNet installed for NLTK in {target}")


if __name__ == "__main__":
    main()
