"""End-to-end Snakemake runs of the ingest stage and the config validation."""

import csv

import pytest

from tests.conftest import make_bad_inputs, run_snakemake


@pytest.mark.slow
def test_metacharacter_names_and_bad_inputs_through_snakemake(tmp_path):
    videos = tmp_path / "my videos"
    files = make_bad_inputs(videos)
    work = tmp_path / "work"
    config = {"video_sets": {"mine": {"path": str(videos), "glob": ["*"]}}, "only_sets": ["mine"]}
    proc = run_snakemake(work, config, "ingest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "PWNED").exists() and not (videos / "PWNED").exists()
    with open(work / "results/mine/videos.tsv", newline="") as f:
        rows = {r["relpath"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert set(rows) == {p.name for p in files.values()}
    assert rows[files["good"].name]["status"] == "ok"
    assert rows[files["dash"].name]["status"] == "ok"
    assert rows[files["good"].name]["frames"] == "12"
    rejected = (work / "results/mine/rejected.tsv").read_text().splitlines()
    assert len(rejected) == 1 + 5  # header + zero, truncated, corrupt, text, single


@pytest.mark.parametrize(
    "config, message",
    [
        ({"video_sets": {"x": {"source": "webcam"}}}, "webcam"),
        ({"video_sets": {"x": {"source": "directory"}}}, "path"),
        ({"video_sets": {"bad name!": {"source": "samples"}}}, "bad name!"),
        ({"video_sets": {"x": {"source": "samples"}}, "ingest": {"min_frames": 1}}, "min_frames"),
        ({"video_sets": {"x": {"source": "samples", "colour": 1}}}, "colour"),
    ],
)
def test_bad_config_stops_with_a_message_naming_the_key(tmp_path, config, message):
    # --configfile merges over config.yaml, so drop the default sets by naming only ours
    proc = run_snakemake(tmp_path, {**config, "only_sets": list(config["video_sets"])}, "-n")
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
