"""Workflow profiles: the CPU profile covers every training rule and lets them run side by side."""

from __future__ import annotations

from pathlib import Path

import yaml

from models.methods import METHODS

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_cpu_profile_caps_every_training_rules_threads():
    # a method added to the registry without an entry here would silently take all cores again;
    # CMP, the longest training, gets two (its step is 1.57x faster with two), the others one;
    # a replicate run (replicate_seeds) gets its method's threads
    threads = _profile("cpu")["set-threads"]
    expected = {f"pretrain_{m}_{kind}": 1 for m in METHODS for kind in ("run", "replicate_run")}
    expected["pretrain_cmp_run"] = expected["pretrain_cmp_replicate_run"] = 2
    assert threads == expected


def test_cpu_profile_lets_more_training_jobs_run_than_the_default_profile():
    # the default's single gpu token serialises training; the CPU profile must not
    assert _profile("default")["resources"]["gpu"] == 1
    assert _profile("cpu")["resources"]["gpu"] >= len(METHODS)


def test_cpu_profile_keeps_the_default_profiles_run_behaviour():
    default, cpu = _profile("default"), _profile("cpu")
    for key in ("cores", "keep-going", "rerun-incomplete", "printshellcmds"):
        assert cpu[key] == default[key], key
