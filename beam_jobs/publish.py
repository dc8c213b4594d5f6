"""Complete or absent: the job writes into a staging folder; this moves it into place.

The old `stats.json` goes first (so the folder stops looking complete), then old outputs are
replaced by the new ones, and the new `stats.json` is written last.
"""

from typing import Dict

from tfrecords_schema import layout, write_stats

PUBLISHED = (layout.TRAIN, layout.EVAL, layout.TRANSFORM_FN_DIR, layout.TRANSFORMED_METADATA_DIR,
             layout.REJECTS_DIR)


def publish(staging: str, out: str, stats: Dict) -> str:
    """Replace OUT's outputs with staging's; write stats.json last; remove staging. Returns the
    stats.json path."""
    import tensorflow as tf

    gfile = tf.io.gfile
    old_stats = layout.join(out, layout.STATS_FILE)
    if gfile.exists(old_stats):
        gfile.remove(old_stats)
    for name in PUBLISHED:
        dst, src = layout.join(out, name), layout.join(staging, name)
        if gfile.exists(dst):
            gfile.rmtree(dst)
        if gfile.exists(src):
            gfile.rename(src, dst)
    path = write_stats(out, stats)
    gfile.rmtree(staging)
    return path
