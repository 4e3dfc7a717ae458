"""Frame/pair sampling policies: counts, pairs inside shots, determinism, independence from
other videos and shots, and rejection of bad input."""

from __future__ import annotations

import pytest

from pipeline.sampling import POLICY_DEFAULTS, Pair, rng_for, sample_pairs

SHOTS = [(0, 40), (40, 47), (47, 300), (300, 420), (420, 425)]


def _inside(pairs, shots):
    by_index = {i: shot for i, shot in enumerate(shots)}
    for pair in pairs:
        start, end = by_index[pair.shot]
        assert start <= pair.t < pair.t + pair.gap < end, pair
        assert pair.gap >= 1


@pytest.mark.parametrize("policy", ["cpfs", "cmp", "pathak"])
def test_pairs_stay_inside_their_shot_and_are_sorted(policy):
    for seed in range(20):
        pairs = sample_pairs(SHOTS, policy=policy, seed=seed, video_key="v")
        _inside(pairs, SHOTS)
        assert pairs == sorted(pairs)
        assert len(set(pairs)) == len(pairs)


def test_cpfs_draws_n_frames_per_video_with_gap_5():
    pairs = sample_pairs(SHOTS, policy="cpfs", seed=0, video_key="v")
    assert len(pairs) == 8
    assert {p.gap for p in pairs} == {5}
    assert len(sample_pairs(SHOTS, policy="cpfs", seed=0, video_key="v", frames_per_video=3)) == 3
    # fewer valid positions than requested: take them all (shot of 8 frames -> t in 0..2)
    assert [p.t for p in sample_pairs([(0, 8)], policy="cpfs", seed=1, video_key="v")] == [0, 1, 2]
    assert sample_pairs([(0, 5)], policy="cpfs", seed=1, video_key="v") == []


def test_cpfs_covers_the_video_uniformly():
    # long shot 0..1000 and short shot 1000..1100: ~1/11 of the frames fall in the short one
    shots = [(0, 1000), (1000, 1100)]
    counts = [0, 0]
    for seed in range(300):
        for pair in sample_pairs(shots, policy="cpfs", seed=seed, video_key="u"):
            counts[pair.shot] += 1
    assert 0.05 < counts[1] / sum(counts) < 0.14


def test_pathak_5_to_10_frames_per_usable_shot_and_strides_long_shots():
    sizes = set()
    for seed in range(40):
        pairs = sample_pairs(SHOTS, policy="pathak", seed=seed, video_key="v")
        per_shot = {s: [p for p in pairs if p.shot == s] for s in range(len(SHOTS))}
        # shots under 10 frames are skipped (uNLC rule)
        assert per_shot[1] == [] and per_shot[4] == []
        for s in (0, 2, 3):
            assert 5 <= len(per_shot[s]) <= 10
            sizes.add(len(per_shot[s]))
        assert {p.gap for p in pairs} == {1}
        # shot 2 (253 frames) is strided by ceil(252/110) = 3 from its start
        assert all((p.t - 47) % 3 == 0 for p in per_shot[2])
    assert sizes == set(range(5, 11))


def test_cmp_pairs_consecutive_sampled_frames_below_max_gap():
    for seed in range(40):
        pairs = sample_pairs(SHOTS, policy="cmp", seed=seed, video_key="v")
        assert all(p.gap < 10 for p in pairs)
        # the pairs chain through the pathak frames: every target is itself a drawn frame or
        # the last drawn frame of the shot, so at most (frames - 1) pairs per shot
        for s in (0, 2, 3):
            assert len([p for p in pairs if p.shot == s]) <= 9
    # dense sampling in a 12-frame shot: all gaps small, so every consecutive pair is kept
    dense = sample_pairs([(0, 12)], policy="cmp", seed=3, video_key="v", min_frames=10)
    frames = [p.t for p in dense] + [dense[-1].t + dense[-1].gap]
    assert len(frames) == 10
    assert all(b - a == p.gap for a, b, p in zip(frames, frames[1:], dense, strict=False))
    # a larger max_gap can only add pairs (same frames drawn)
    narrow = sample_pairs(SHOTS, policy="cmp", seed=5, video_key="v", max_gap=4)
    wide = sample_pairs(SHOTS, policy="cmp", seed=5, video_key="v", max_gap=200)
    assert set(narrow) <= set(wide)
    assert all(p.gap < 4 for p in narrow)


@pytest.mark.parametrize("policy", ["cpfs", "cmp", "pathak"])
def test_deterministic_and_seed_sensitive(policy):
    a = sample_pairs(SHOTS, policy=policy, seed=7, video_key="set/vid-1")
    b = sample_pairs(SHOTS, policy=policy, seed=7, video_key="set/vid-1")
    assert a == b
    others = [sample_pairs(SHOTS, policy=policy, seed=s, video_key="set/vid-1") for s in range(8)]
    assert len({tuple(o) for o in others}) > 1
    assert sample_pairs(SHOTS, policy=policy, seed=7, video_key="set/vid-2") != a


def test_known_answer_pins_the_stable_hash():
    # sha256 + numpy's SeedSequence/PCG64 are stable across processes and Python versions;
    # Python's hash() of a str is salted per process and would break this
    pairs = sample_pairs([(0, 100)], policy="cpfs", seed=0, video_key="video", frames_per_video=3)
    assert pairs == [Pair(0, 11, 5), Pair(0, 22, 5), Pair(0, 24, 5)]
    assert rng_for(0, "video").integers(0, 2**31) != rng_for(1, "video").integers(0, 2**31)


@pytest.mark.parametrize("policy", ["cmp", "pathak"])
def test_a_shot_samples_do_not_depend_on_other_shots(policy):
    full = sample_pairs(
        [{"index": i, "start": s, "end": e} for i, (s, e) in enumerate(SHOTS)],
        policy=policy,
        seed=1,
        video_key="v",
    )
    # the same shot (same index) alone gives the same pairs
    alone = sample_pairs(
        [{"index": 2, "start": 47, "end": 300}], policy=policy, seed=1, video_key="v"
    )
    assert alone == [p for p in full if p.shot == 2]


def test_samples_do_not_depend_on_other_videos():
    # a video's pairs depend on (seed, video_key) only: sampling others first changes nothing
    before = sample_pairs(SHOTS, policy="cpfs", seed=2, video_key="b")
    for key in ("a", "c", "d"):
        sample_pairs(SHOTS, policy="cpfs", seed=2, video_key=key)
    assert sample_pairs(SHOTS, policy="cpfs", seed=2, video_key="b") == before


def test_dict_shots_keep_their_index():
    pairs = sample_pairs(
        [{"index": 4, "start": 100, "end": 160, "length": 60}],
        policy="pathak",
        seed=0,
        video_key="v",
    )
    assert pairs and {p.shot for p in pairs} == {4}
    assert all(100 <= p.t < p.t + p.gap < 160 for p in pairs)


def test_pair_is_frozen_and_ordered():
    pair = Pair(shot=1, t=5, gap=2)
    with pytest.raises(AttributeError):
        pair.t = 6  # type: ignore[misc]
    assert Pair(0, 9, 1) < Pair(1, 0, 1) < Pair(1, 2, 1)


def test_defaults_match_the_papers():
    assert POLICY_DEFAULTS["cpfs"] == {"frames_per_video": 8, "gap": 5}
    assert POLICY_DEFAULTS["cmp"]["max_gap"] == 10
    assert (POLICY_DEFAULTS["pathak"]["min_frames"], POLICY_DEFAULTS["pathak"]["max_frames"]) == (
        5,
        10,
    )


@pytest.mark.parametrize(
    "shots, kwargs",
    [
        (SHOTS, {"policy": "nope"}),
        (SHOTS, {"policy": "cpfs", "bogus": 1}),
        (SHOTS, {"policy": "cpfs", "gap": 0}),
        (SHOTS, {"policy": "cpfs", "gap": 2.5}),
        (SHOTS, {"policy": "pathak", "min_frames": 11}),
        (SHOTS, {"policy": "cmp", "max_gap": 1}),
        (SHOTS, {"policy": "cmp", "gap": 3}),
        (SHOTS, {"policy": "cpfs", "seed": "1"}),
        (SHOTS, {"policy": "cpfs", "video_key": ""}),
        ([(5, 5)], {"policy": "cpfs"}),
        ([(-1, 5)], {"policy": "cpfs"}),
        ([(0, 10), (5, 20)], {"policy": "cpfs"}),
        ([(0, 10, 20)], {"policy": "cpfs"}),
        ([{"start": 0}], {"policy": "cpfs"}),
        ([(0.0, 10)], {"policy": "cpfs"}),
        (
            [{"index": 1, "start": 0, "end": 5}, {"index": 1, "start": 5, "end": 9}],
            {"policy": "cmp"},
        ),
    ],
)
def test_bad_input_raises_value_error(shots, kwargs):
    arguments = {"seed": 0, "video_key": "v", **kwargs}
    with pytest.raises(ValueError):
        sample_pairs(shots, **arguments)


def test_no_shots_no_pairs():
    for policy in ("cpfs", "cmp", "pathak"):
        assert sample_pairs([], policy=policy, seed=0, video_key="v") == []
