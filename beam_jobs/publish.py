"""Complete or absent: the job writes into a staging folder; this moves it into place.

What a reader of OUT finds at each instant, a kill (`kill -9`) included:
  - while the job runs, only `OUT/.staging-XXXX/` is written: OUT keeps the previous complete
    output (if any), untouched, and readers ignore staging folders (they read the shards
    stats.json lists, never a glob);
  - publishing first removes the old `stats.json` (the folder stops looking complete), then
    replaces each output folder with the staged one, then writes the new `stats.json` (a
    temporary name, then a rename): until that rename OUT has no stats.json and every reader
    (tfrecords_schema.read_stats) refuses it;
  - after it, the staging folder and any `.staging-*` a killed earlier run left are removed;
    a kill there leaves a complete output plus a leftover the next run removes.
One run per OUT at a time: a second live run's staging would be removed as a leftover.

Ownership (tfrecords_schema.ownership): OUT's marker lists every file crewstream wrote in OUT's
entries. Before anything is removed, publishing checks OUT again (a file that appeared in an entry
during the run stops it, nothing replaced) and adds the staged files to the marker, so that a kill
at any later instant leaves no file in an entry the marker does not list. Of the earlier output
only the listed files are deleted (never through a symbolic link), and of the `.staging-*` folders
only crewstream's (they hold a staging marker).
"""

from typing import Dict

from tfrecords_schema import ownership, write_stats, file_io, output_folder

PUBLISHED = (*output_folder.SPLITS, *output_folder.TRANSFORM_DIRS, output_folder.REJECTS_DIR)


def publish(staging: str, out: str, stats: Dict) -> str:
    """Replace OUT's outputs with staging's; write stats.json last; remove staging and the
    leftovers of killed runs. Returns the stats.json path. OwnershipError, with OUT untouched,
    if OUT's entries hold a file crewstream did not write or a symbolic link."""
    import tensorflow as tf

    gfile = tf.io.gfile
    kind = ownership.PREPROCESS
    owned = ownership.check_output_folder(out, kind)
    new = ownership.list_files(staging, PUBLISHED) | {output_folder.STATS_FILE}
    ownership.write_marker(out, kind.name, owned | new)
    old_stats = file_io.join(out, output_folder.STATS_FILE)
    if gfile.exists(old_stats):
        gfile.remove(old_stats)
    for name in PUBLISHED:
        dst, src = file_io.join(out, name), file_io.join(staging, name)
        ownership.remove_owned(out, name, owned)
        if gfile.exists(src):
            gfile.rename(src, dst)
    path = write_stats(out, stats)
    ownership.write_marker(out, kind.name, new)
    ownership.remove_tree(staging)
    ownership.remove_leftover_stagings(out)  # what killed runs left
    return path
