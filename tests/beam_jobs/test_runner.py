"""beam_jobs.runner: the local worker count a run gets when the user does not choose one."""

import pytest

from beam_jobs import runner


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n):
        monkeypatch.setattr(runner, "usable_cores", lambda: n)
    return set_cores


def test_a_large_local_run_gets_one_in_process_worker_per_core(cores):
    cores(2)
    assert runner.with_local_workers([], runner.PARALLEL_INPUT_BYTES) == ["--direct_num_workers", "2"]
    cores(64)
    assert runner.with_local_workers(["--save_main_session"], 1 << 40) == [
        "--save_main_session", "--direct_num_workers", str(runner.MAX_LOCAL_WORKERS)]


@pytest.mark.parametrize("args", [["--direct_num_workers", "1"], ["--direct_num_workers=3"],
                                  ["--direct_running_mode", "multi_processing"], ["--runner", "DataflowRunner"],
                                  ["--environment_type=EXTERNAL", "--environment_config=localhost:5000"]])
def test_a_choice_of_the_user_is_kept(cores, args):
    cores(4)
    assert runner.with_local_workers(args, 1 << 40) == args


def test_a_small_run_or_one_core_stays_on_one_worker(cores):
    cores(4)
    assert runner.with_local_workers([], runner.PARALLEL_INPUT_BYTES - 1) == []
    cores(1)
    assert runner.with_local_workers([], 1 << 40) == []


def test_input_bytes_counts_local_files(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"x" * 10)
    (tmp_path / "b.csv").write_bytes(b"y" * 5)
    assert runner.input_bytes([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "gs://bucket/c.csv"]) == 15


def test_a_run_skips_beams_construction_type_checks_unless_the_user_chose():
    from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions

    assert runner.without_type_checks(["--save_main_session"]) == ["--save_main_session", "--no_pipeline_type_check"]
    assert PipelineOptions(runner.without_type_checks([])).view_as(TypeOptions).pipeline_type_check is False
    for chosen in (["--type_check_strictness", "ALL_REQUIRED"], ["--type_check_additional=all"],
                   ["--runtime_type_check"], ["--no_pipeline_type_check"]):
        assert runner.without_type_checks(chosen) == chosen
    # Beam has no flag that turns the checks on: asking for any type checking keeps its default, on
    assert PipelineOptions(runner.without_type_checks(["--type_check_strictness", "DEFAULT_TO_ANY"])).view_as(
        TypeOptions).pipeline_type_check is True


def _built_with_type_checks(build) -> list:
    """The element types of the pipeline `build(pipeline)` wires, built with Beam's construction-
    time type checks on (a step whose declared or inferred types do not fit raises here)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions
    from apache_beam.typehints import typehints

    options = PipelineOptions([])  # Beam's default: the checks on
    assert options.view_as(TypeOptions).pipeline_type_check
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    types = []

    class Types(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            types.extend(o.element_type for o in node.outputs.values())

    pipeline.visit(Types())
    return [t for t in types if t is not None and t != typehints.Any]


@pytest.mark.parametrize("layout", ["windows", "sequence"])
def test_preprocess_passes_beams_type_checks(tmp_path, layout):
    """The runs skip the checks (without_type_checks); the pipeline they run must still pass them."""
    from beam_jobs import preprocess

    csv = tmp_path / "train.csv"
    csv.write_text("crew,experiment,time,seat,r,event\n1,CA,0.0,0,1.5,A\n")
    args, _ = preprocess._parse_args(["--input", str(csv), "--output", str(tmp_path / "out"), "--eval-crews", "2",
                                      "--layout", layout, "--features", "r"])
    inferred = _built_with_type_checks(
        lambda p: preprocess.build_pipeline(p, [str(csv)], args, str(tmp_path / "staging")))
    assert inferred  # the checks ran: some outputs got a type


@pytest.mark.parametrize("path", ["sweep", "windows"])
def test_predict_passes_beams_type_checks(tmp_path, path):
    from beam_jobs import predict

    csv = tmp_path / "test.csv"
    csv.write_text("id,crew,experiment,time,seat,r\n0,1,LOFT,0.0,0,1.5\n")
    args, _ = predict._parse_args(["--model-dir", str(tmp_path / "model"), "--input", str(csv),
                                   "--output", str(tmp_path / "sub.csv")])
    config = {"features": ["r"], "label_vocabulary": ["A", "B", "C", "D"], "model_dir": str(tmp_path / "model"),
              "window": 4}
    inferred = _built_with_type_checks(
        lambda p: predict.build_pipeline(p, [str(csv)], args, config, path, str(tmp_path / "staging")))
    assert inferred
