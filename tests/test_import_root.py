"""`import shardwalk` from the folder that holds the clone (issue 23, item 7).

`git clone .../shardwalk` makes a folder named shardwalk; Python run from its parent folder
(`python -c "import shardwalk"`) finds that folder first, an empty namespace package, and keeps
looking: a regular package later on sys.path wins over it. setuptools' default (lenient)
editable install maps the package with an import finder that runs only after Python's own
path search, which has settled on the namespace package by then (`shardwalk.Engine` was an
AttributeError).

So the editable install is in compat mode (pyproject.toml, `[tool.distutils.editable_wheel]`):
its .pth puts the checkout on sys.path, where shardwalk/ is a regular package; and
shardwalk/__init__.py, in a checkout only (index/ not inside the package folder, the checkout's
index/ beside it), adds the checkout to the package's path, so that shardwalk.index, .walks and
.server are the top-level folders index/, walks/ and server/, as package-dir maps them in the
wheel. The same makes the package whole when pytest puts the checkout first on sys.path. A
non-editable install has them inside the package and is left as it is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SHOW = (
    "import shardwalk, shardwalk.index, shardwalk.walks, shardwalk.server; "
    "print(shardwalk.Engine); "
    "print(shardwalk.index.__file__, shardwalk.walks.__file__, shardwalk.server.__file__)"
)


def test_import_from_the_folder_that_holds_the_clone(tmp_path: Path) -> None:
    (tmp_path / "shardwalk").symlink_to(REPO, target_is_directory=True)  # the clone's folder
    done = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        "import shardwalk from the clone's parent folder found the clone's folder (an empty "
        "namespace package)\n" + done.stderr[-2000:]
    )
    engine, files = done.stdout.splitlines()
    assert "shardwalk.engine.Engine" in engine
    # the subpackages are the checkout's top-level folders
    assert [Path(f).resolve() for f in files.split()] == [
        REPO / folder / "__init__.py" for folder in ("index", "walks", "server")
    ]
