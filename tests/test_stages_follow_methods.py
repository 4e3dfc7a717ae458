"""Stages follow the methods (issue 28): a target plans what its methods read and nothing else.

Dry runs (``snakemake -n``) on a new synthetic set of four videos in chunks of one or two: fast.
"""

from __future__ import annotations

import json

import pytest

from models.data import _VIEW_FIELDS
from models.methods import METHODS
from models.train import check_shard_fields
from pipeline.fields import (
    METHOD_FIELDS,
    index_fields,
    missing_fields,
    shards_suffix,
    stages_for,
)
from tests.conftest import run_snakemake

NEW_SET = {
    "video_sets": {"new": {"source": "synthetic", "videos": 4, "seed": 1, "chunk_size": 2}},
    "only_sets": ["new"],
}


def planned(tmp_path, config, *targets):
    proc = run_snakemake(tmp_path, {**NEW_SET, **config}, *targets, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    return {
        x.split()[0]: int(x.split()[1])
        for x in lines
        if len(x.split()) == 2 and x.split()[1].isdigit()
    }


def test_pretrain_cmp_plans_no_masks_and_pretrain_motionmask_does(tmp_path):
    cmp = planned(tmp_path, {}, "pretrain_cmp")
    assert "masks_chunk" not in cmp and "guidance_chunk" not in cmp
    chunks = cmp["flow_chunk"]
    assert chunks >= 2 and cmp["shards_chunk"] == chunks and cmp["shards_index"] == 1
    motionmask = planned(tmp_path, {}, "pretrain_motionmask")
    assert motionmask["masks_chunk"] == chunks and "guidance_chunk" not in motionmask
    assert motionmask["shards_chunk"] == chunks and motionmask["shards_index"] == 1


def test_cmp_and_motionmask_build_the_masks_once_and_share_one_shard_set(tmp_path):
    config = {"pretrain": {"methods": ["cmp", "motionmask"]}}
    # (the default target also needs a common backbone of the two: its training rules suffice)
    jobs = planned(tmp_path, config, "pretrain_cmp", "pretrain_motionmask", "shards", "masks")
    chunks = jobs["flow_chunk"]
    assert jobs["masks_chunk"] == chunks and jobs["shards_chunk"] == chunks
    assert jobs["shards_index"] == 1 and jobs["masks_evaluate"] == 1
    assert jobs["pretrain_cmp_run"] == jobs["pretrain_motionmask_run"] == 1
    assert "guidance_chunk" not in jobs


def test_the_default_target_of_cmp_runs_no_masks_and_offline_guidance_on_request(tmp_path):
    jobs = planned(tmp_path, {})
    assert not {"masks_chunk", "masks_evaluate", "benchmark_mask_quality"} & set(jobs)
    assert not {"guidance_chunk", "guidance_stats", "report_figures_guidance"} & set(jobs)
    assert jobs["report_figures_flow"] == 1 and jobs["disk_usage"] == 1
    offline = planned(tmp_path, {"guidance": {"offline": True}})
    assert offline["guidance_chunk"] == offline["flow_chunk"] and offline["guidance_stats"] == 1
    assert "masks_chunk" not in offline
    # an explicit stage target still builds that stage
    assert planned(tmp_path, {}, "masks")["masks_chunk"] == jobs["flow_chunk"]


def test_every_method_declares_the_fields_its_view_reads():
    assert set(METHOD_FIELDS) == set(METHODS)
    for name, method in METHODS.items():
        assert set(_VIEW_FIELDS[method.view]) <= set(METHOD_FIELDS[name]), name
    assert stages_for(["cmp", "cpfs", "s3", "flowcls"]) == ()
    assert stages_for(["cmp", "motionmask"]) == ("masks",)
    assert stages_for(["cmp"], guidance_offline=True) == ("guidance",)
    assert shards_suffix(["guidance", "masks"]) == "-masks-guidance"
    with pytest.raises(ValueError, match="no field declaration"):
        stages_for(["nope"])


def test_a_method_whose_field_is_missing_fails_in_one_line_naming_the_stage(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"schema_version": 2, "fields": ["image", "flow"], "shards": []}))
    config = {"method": "motionmask", "data": {"kwargs": {"index_paths": [str(index)]}}}
    with pytest.raises(ValueError) as err:
        check_shard_fields(config)
    message = str(err.value)
    assert "\n" not in message and "'trimap'" in message and "enable the masks stage" in message
    check_shard_fields({**config, "method": "cmp"})  # image and flow are there
    # an index written before the declaration: masks where a sample has one
    old = {"shards": [{"has_mask": [0, 1]}]}
    assert missing_fields("motionmask", index_fields(old), "x") is None
    assert "masks stage" in missing_fields("motionmask", index_fields({"shards": []}), "x")
