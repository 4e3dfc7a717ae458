import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.ids import VIDEO_ID_PATTERN, frame_key, sample_id, video_id


@given(st.text(min_size=1, max_size=300))
def test_video_id_is_wildcard_and_filesystem_safe(relpath):
    vid = video_id(relpath)
    assert re.fullmatch(VIDEO_ID_PATTERN, vid), vid
    assert len(vid) <= 80
    assert video_id(relpath) == vid  # stable


def test_video_ids_differ_when_names_sanitise_alike():
    assert video_id("a b.mp4") != video_id("a_b.mp4")
    assert video_id("x/a.mp4") != video_id("y/a.mp4")


def test_video_id_keeps_a_readable_stem():
    assert video_id("clips/My Holiday.mp4").startswith("clips_My_Holiday.mp4-")
    assert video_id("$(rm -rf x); ü.mp4").startswith("rm_-rf_x_.mp4-")


def test_keys():
    assert frame_key(2, 41) == "s002_f000041"
    assert sample_id("synthetic", "v-1", 2, 41) == "synthetic/v-1/2/41"
