"""tfrecords_schema.ownership, the rules of docs/DESIGN.md "Outputs crewstream owns", on plain folders
(no command, no pipeline). tests/test_output_ownership.py runs the commands against the same cases."""

import gzip
import json
import os

import pytest

from tests.helpers import good_stats, tree
from tfrecords_schema import serving
from tfrecords_schema import ownership
from tfrecords_schema.ownership import OwnershipError

LISTING = ownership.Kind("listing", ("train", "stats.json"), lists_files=True)
WHOLE = ownership.Kind("whole", ("model", "notes.json"))


def put(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_is_inside_compares_resolved_paths(tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    os.symlink(out / "train", tmp_path / "alias")
    assert ownership.is_inside(str(out / "train" / "a.csv"), str(out))
    assert ownership.is_inside(str(out), str(out) + "/")
    assert ownership.is_inside(str(tmp_path / "alias" / "a.csv"), str(out))  # through a link
    assert not ownership.is_inside(str(tmp_path / "out2" / "a.csv"), str(out))  # a name that only starts alike
    assert not ownership.is_inside(str(tmp_path / "a.csv"), str(out))
    assert ownership.is_inside("gs://b/out/train/x", "gs://b/out/")
    assert not ownership.is_inside("gs://b/output/x", "gs://b/out")


def test_new_or_empty_folder_is_accepted_and_nothing_is_written(tmp_path):
    assert ownership.check_output_folder(str(tmp_path / "new"), LISTING) == frozenset()
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert ownership.check_output_folder(str(tmp_path / "empty"), LISTING) == frozenset()
    assert os.listdir(tmp_path / "empty") == []


def test_claim_marks_a_folder_once_and_unclaim_removes_only_an_empty_claim(tmp_path):
    out = str(tmp_path / "out")
    ownership.claim(out, LISTING, frozenset({"train/a"}))
    assert json.load(open(os.path.join(out, ownership.MARKER))) == {"kind": "listing", "files": ["train/a"]}
    ownership.claim(out, LISTING, frozenset())  # already marked: kept as it is
    assert ownership.read_marker(out)["files"] == ["train/a"]
    ownership.unclaim(out)
    assert ownership.read_marker(out)["files"] == ["train/a"]
    ownership.write_marker(out, LISTING.name)
    ownership.unclaim(out)
    assert os.listdir(out) == []


@pytest.mark.parametrize("case, make, message", [
    ("a file", lambda out: put(out),
     "--output {out} is an existing file, not a folder; give a new or empty folder"),
    ("someone's folder", lambda out: put(f"{out}/train/mine.csv") and put(f"{out}/a") and put(f"{out}/b")
     and put(f"{out}/c"),
     "--output {out} is not empty (a, b, c and 1 more) and not the output of an earlier crewstream "
     "listing run; choose a new or empty folder"),
    ("another kind", lambda out: ownership.write_marker(out, "whole"),
     "--output {out} is a crewstream whole output, not a listing output; choose another folder"),
    ("a broken marker", lambda out: put(f"{out}/{ownership.MARKER}", "{"),
     "{out}/.crewstream.json is not a crewstream marker (Expecting property name enclosed in double "
     "quotes: line 1 column 2 (char 1))"),
    ("an unlisted file", lambda out: ownership.write_marker(out, "listing", ["train/a"]) and put(f"{out}/train/a")
     and put(f"{out}/train/mine.csv"),
     "--output {out}: train/mine.csv not written by crewstream (a run would replace it): move it or "
     "choose another folder"),
    ("an entry is a link", lambda out: ownership.write_marker(out, "listing") and os.symlink("/", f"{out}/train"),
     "--output {out}: train is a symbolic link; crewstream never writes or deletes through one: remove "
     "the link or choose another folder"),
    ("a link inside an entry", lambda out: ownership.write_marker(out, "listing", ["train/a"])
     and os.makedirs(f"{out}/train") or os.symlink("/etc/hostname", f"{out}/train/a"),
     "--output {out}: train/a is a symbolic link; crewstream never writes or deletes through one: "
     "remove the link or choose another folder"),
])
def test_refused_with_one_line_and_nothing_written(tmp_path, case, make, message):
    out = str(tmp_path / "out")
    make(out)
    before = tree(tmp_path)
    with pytest.raises(OwnershipError) as error:
        ownership.check_output_folder(out, LISTING)
    assert str(error.value) == message.format(out=out)
    assert tree(tmp_path) == before


def test_an_input_inside_or_equal_to_the_output_is_refused(tmp_path):
    out = tmp_path / "out"
    source = put(out / "train" / "input.csv")
    with pytest.raises(OwnershipError, match=f"^--output {out} holds the input {source}; a run would write"):
        ownership.check_output_folder(str(out), LISTING, inputs=[source])
    with pytest.raises(OwnershipError, match="holds the input"):
        ownership.check_output_folder(str(out / "train"), LISTING, inputs=[str(out / "train")])
    assert ownership.check_output_folder(str(tmp_path / "out2"), LISTING, inputs=[source]) == frozenset()


def test_an_earlier_output_returns_what_it_owns_and_beside_its_entries_anything_goes(tmp_path):
    out = tmp_path / "out"
    ownership.write_marker(str(out), "listing", ["train/a", "stats.json"])
    put(out / "train" / "a")
    put(out / "README.txt")  # beside the entries: never touched, not refused
    assert ownership.check_output_folder(str(out), LISTING) == {"train/a", "stats.json"}
    # a kind that does not list files: the entries are its own as a whole, links still refused
    ownership.write_marker(str(out), "whole")
    put(out / "model" / "anything")
    assert ownership.check_output_folder(str(out), WHOLE) == frozenset()


def test_the_output_folder_itself_may_be_a_link_to_a_folder(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "out")
    assert ownership.check_output_folder(str(tmp_path / "out"), LISTING) == frozenset()


@pytest.mark.parametrize("kind, entry", [(ownership.PREPROCESS, "stats.json"), (ownership.MODEL, "train_config.json")])
def test_an_unmarked_output_of_an_older_crewstream_is_refused_and_left_alone(tmp_path, kind, entry):
    """Outputs written before markers existed carry none: not rewritten, whatever they hold."""
    out = tmp_path / "out"
    put(out / entry, json.dumps(good_stats()))
    before = tree(out)
    with pytest.raises(OwnershipError, match=f"not the output of an earlier crewstream {kind.name} run; "
                                             "choose a new or empty folder"):
        ownership.check_output_folder(str(out), kind)
    assert tree(out) == before


def test_model_entries_are_the_names_train_and_export_write():
    from trainer import evaluate, train

    assert ownership.MODEL.entries[0] == train.CONFIG_FILE
    names = {train.CONFIG_FILE, train.HISTORY_FILE, train.CHECKPOINTS_DIR, train.LOGS_DIR, train.PLOTS_DIR,
             serving.SERVING_DIR}
    assert names <= set(ownership.MODEL.entries)
    assert any(name in open(evaluate.__file__).read() for name in ownership.MODEL.entries if name not in names)


def test_remove_owned_deletes_the_listed_files_and_their_emptied_folders_only(tmp_path):
    out = tmp_path / "out"
    put(out / "transform_fn" / "variables" / "v.index")
    put(out / "transform_fn" / "saved_model.pb")
    (out / "transform_fn" / "assets").mkdir()
    put(out / "other" / "keep")
    ownership.remove_owned(str(out), "transform_fn",
                           frozenset({"transform_fn/variables/v.index", "transform_fn/saved_model.pb"}))
    assert tree(out) == {"other": "dir", "other/keep": b"x"}
    ownership.remove_owned(str(out), "absent", frozenset())  # nothing to do


def test_remove_owned_refuses_before_deleting_anything(tmp_path):
    out = tmp_path / "out"
    put(out / "train" / "a")
    put(out / "train" / "mine.csv")
    put(tmp_path / "elsewhere" / "precious")
    os.symlink(tmp_path / "elsewhere", out / "eval")
    before = tree(tmp_path)
    with pytest.raises(OwnershipError, match=f"^{out}/train holds train/mine.csv, not written by crewstream"):
        ownership.remove_owned(str(out), "train", frozenset({"train/a"}))
    with pytest.raises(OwnershipError, match="is a symbolic link; crewstream never deletes through one"):
        ownership.remove_owned(str(out), "eval", frozenset({"eval/precious"}))
    assert tree(tmp_path) == before


def test_remove_tree_never_follows_a_link(tmp_path):
    put(tmp_path / "elsewhere" / "precious")
    put(tmp_path / "staging" / "a" / "b")
    os.symlink(tmp_path / "elsewhere", tmp_path / "staging" / "a" / "link")
    os.symlink(tmp_path / "staging", tmp_path / "alias")
    with pytest.raises(OwnershipError):
        ownership.remove_tree(str(tmp_path / "alias"))
    ownership.remove_tree(str(tmp_path / "staging"))
    assert tree(tmp_path) == {"elsewhere": "dir", "elsewhere/precious": b"x",
                              "alias": ("link", str(tmp_path / "staging"))}


def test_only_crewstreams_staging_folders_are_leftovers(tmp_path):
    out = tmp_path / "out"
    ownership.write_marker(str(out / ".staging-killed"), ownership.STAGING_KIND)
    put(out / ".staging-killed" / "blocks" / "x")
    (out / ".staging-empty").mkdir()
    put(out / ".staging-half" / (ownership.MARKER + ".tmp"))
    put(out / ".staging-someones" / "keep")
    ownership.write_marker(str(out / ".staging-other-kind"), "preprocess")
    put(tmp_path / "elsewhere" / "precious")
    os.symlink(tmp_path / "elsewhere", out / ".staging-link")
    removed = ownership.remove_leftover_stagings(str(out))
    assert sorted(os.path.basename(p) for p in removed) == [".staging-empty", ".staging-half", ".staging-killed"]
    assert sorted(os.listdir(out)) == [".staging-link", ".staging-other-kind", ".staging-someones"]
    assert (tmp_path / "elsewhere" / "precious").exists()


HEADER = "id,A,B,C,D"


@pytest.mark.parametrize("case, make, message", [
    ("the input", lambda p, src: put(src, HEADER + "\n"), "{path} is the input {src}; choose another output file"),
    ("a folder", lambda p, src: os.makedirs(p), "{path} is a folder, not a file; choose an output file"),
    ("a link", lambda p, src: put(src) and os.symlink(src + ".other", p),
     "{path} is a symbolic link; crewstream never writes through one: remove the link or choose another output file"),
    ("someone's file", lambda p, src: put(p, "id,A,B,C,D,E\n1,0,0,0,0,1\n"),
     "{path} exists and was not written by crewstream (its first line is not 'id,A,B,C,D'); move it or "
     "choose another output file"),
    ("a header further down", lambda p, src: put(p, "\nid,A,B,C,D\n"),
     "{path} exists and was not written by crewstream (its first line is not 'id,A,B,C,D'); move it or "
     "choose another output file"),
])
def test_an_output_file_is_written_only_over_one_crewstream_wrote(tmp_path, case, make, message):
    path = str(tmp_path / "sub.csv")
    src = path if case == "the input" else str(tmp_path / "test.csv")
    make(path, src)
    before = tree(tmp_path)
    with pytest.raises(OwnershipError) as error:
        ownership.check_output_file(path, HEADER, [src])
    assert str(error.value) == message.format(path=path, src=src)
    assert tree(tmp_path) == before


def test_an_output_file_crewstream_wrote_is_recognized_by_its_first_line(tmp_path):
    ownership.check_output_file(str(tmp_path / "absent.csv"), HEADER, [str(tmp_path / "t.csv")])
    put(tmp_path / "sub.csv", HEADER + "\r\n1,0.25,0.25,0.25,0.25\r\n")
    ownership.check_output_file(str(tmp_path / "sub.csv"), HEADER)
    with gzip.open(tmp_path / "sub.csv.gz", "wt") as f:
        f.write(HEADER + "\n")
    ownership.check_output_file(str(tmp_path / "sub.csv.gz"), HEADER)
    put(tmp_path / "plain.csv.gz", HEADER + "\n")  # named .gz but not gzip: not crewstream's
    with pytest.raises(OwnershipError, match="was not written by crewstream"):
        ownership.check_output_file(str(tmp_path / "plain.csv.gz"), HEADER)
    # a hard link to the input is the input
    put(tmp_path / "t.csv", HEADER + "\n")
    os.link(tmp_path / "t.csv", tmp_path / "hard.csv")
    with pytest.raises(OwnershipError, match="is the input"):
        ownership.check_output_file(str(tmp_path / "hard.csv"), HEADER, [str(tmp_path / "t.csv")])
