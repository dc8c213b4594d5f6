"""Files written whole or not at all: the content goes to a temporary name beside the target, which
is then renamed over it, so a run killed mid-write leaves the earlier file whole (or none).

Local paths go through os (TensorFlow not imported); URLs (gs://..., ram://...) through
tf.io.gfile, imported only then, whose errors (tf.errors.OpError) the caller may turn into one line.
"""

from typing import Union

from tfrecords_schema import layout

TMP_SUFFIX = ".tmp"


def temporary_name(path: str) -> str:
    """Where `write_atomic(path, ...)` writes before the rename: PATH.tmp."""
    return path + TMP_SUFFIX


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Write `content` (text is UTF-8) to `path` through `temporary_name(path)`, replacing any file
    there. The folder must exist."""
    tmp = temporary_name(path)
    with layout.open_file(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    layout.replace(tmp, path)
