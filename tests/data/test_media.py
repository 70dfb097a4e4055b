"""Bad media: the probe's verdict on files of the wild, the up-front check with its cache and report,
the strict / skipping rule, and that evaluation shares the rule."""

from __future__ import annotations

import os

import pytest

from videothinker.config import VideoConfig
from videothinker.data import media as media_mod
from videothinker.data.media import (
    MISSING,
    UNDECODABLE,
    BadMediaError,
    bad_media_kind,
    check_media,
    keep_usable,
    load_record_visual,
)
from videothinker.data.records import Record
from videothinker.data.video import VideoError, probe_visual

SMALL = VideoConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 16)


def record(path, index: int = 0) -> Record:
    return Record(
        problem="Which of the following will happen?",
        options=["A. x", "B. y"],
        solution="<answer>A</answer>",
        problem_type="multiple choice",
        data_type="video",
        video=None if path is None else str(path),
        source="train.json",
        index=index,
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("good", None),
        ("cut", None),  # the index in front and the first frame are there: the probe passes it
        ("corrupt", UNDECODABLE),
        ("damaged", UNDECODABLE),
        ("truncated", UNDECODABLE),
        ("missing", MISSING),
    ],
)
def test_probe_verdicts(media_set, name, kind):
    path = str(media_set[name])
    if kind is None:
        probe_visual(path, "video")
        return
    with pytest.raises(VideoError) as info:
        probe_visual(path, "video")
    assert bad_media_kind(info.value) == kind and info.value.path == path


def test_a_file_cut_short_behind_its_index_fails_to_load(media_set):
    """What the probe cannot see, loading finds: the frames the index lists are not all there."""
    with pytest.raises(VideoError, match=r"truncated: \d+ of the 8 frames") as info:
        load_record_visual(record(media_set["cut"]), SMALL, 28)
    assert bad_media_kind(info.value) == UNDECODABLE
    assert load_record_visual(record(media_set["good"]), SMALL, 28).frames.shape[0] == 4


def test_check_media_reports_counts_and_first_paths_in_record_order(media_set):
    names = ["good", "missing", "corrupt", "good2", "truncated", "good", "damaged"]
    records = [record(media_set[n], i) for i, n in enumerate(names)] + [record(None, 7)]
    report = check_media(records, workers=3)
    assert (report.records, report.media) == (7, 6)  # "good" twice, one text-only record
    assert (report.count(MISSING), report.count(UNDECODABLE), report.bad_records) == (1, 3, 4)
    assert report.first(5) == [str(media_set[n]) for n in ("missing", "corrupt", "truncated", "damaged")]
    assert report.to_row() == {
        "records": 4,
        "missing": 1,
        "undecodable": 3,
        "first": report.first(5),
    }
    text = report.describe()
    assert text.startswith("1 missing and 3 undecodable media (first: ")
    assert f"{media_set['missing']} (missing), {media_set['corrupt']} (undecodable)" in text and "..." in text


def test_the_cache_spares_a_second_check_and_misses_a_changed_file(media_set, tmp_path, monkeypatch):
    good = tmp_path / "v.mp4"
    good.write_bytes(media_set["good"].read_bytes())
    records = [record(good, 0), record(media_set["corrupt"], 1), record(media_set["missing"], 2)]
    cache = tmp_path / "media_check.json"
    first = check_media(records, cache)
    probed = []
    real = media_mod.probe_visual
    monkeypatch.setattr(media_mod, "probe_visual", lambda *a: probed.append(a[0]) or real(*a))

    again = check_media(records, cache)
    assert probed == [str(media_set["missing"])]  # only the missing one (never cached: a stat is as fast)
    assert again.cached == 2 and again.to_row() == first.to_row()
    assert str(again.bad[(str(media_set["corrupt"]), "video")]) == str(
        first.bad[(str(media_set["corrupt"]), "video")]
    )

    # A file that changes (size or mtime) is probed again: a good file replaced by a broken one.
    probed.clear()
    good.write_bytes(media_set["truncated"].read_bytes())
    os.utime(good, ns=(1, 1))
    report = check_media(records, cache)
    assert probed == [str(good), str(media_set["missing"])] and report.bad_records == 3


def test_an_unreadable_cache_is_checked_again(media_set, tmp_path):
    cache = tmp_path / "media_check.json"
    cache.write_text("{not json")
    report = check_media([record(media_set["good"])], cache)
    assert report.cached == 0 and not report.bad and cache.read_text().startswith("{")


@pytest.mark.parametrize("skip", [False, True])
def test_keep_usable_strict_and_skipping(media_set, skip):
    records = [record(media_set[n], i) for i, n in enumerate(["good", "corrupt", "missing", "good2"])]
    report = check_media(records)
    if not skip:
        with pytest.raises(BadMediaError, match=r"2 of 4 training records have bad media: 1 missing and 1 "):
            keep_usable(records, report, skip=False)
    else:
        assert [r.index for r in keep_usable(records, report, skip=True)] == [0, 3]


@pytest.mark.parametrize("skip", [False, True])
def test_an_all_bad_set_stops_either_way(media_set, skip):
    records = [record(media_set[n], i) for i, n in enumerate(["corrupt", "missing", "truncated"])]
    report = check_media(records)
    with pytest.raises(BadMediaError, match="3 of 3 training records have bad media") as info:
        keep_usable(records, report, skip=skip)
    assert ("no training record is left" in str(info.value)) == skip


def test_all_good_passes_through(media_set):
    records = [record(media_set["good"]), record(None, 1)]
    assert keep_usable(records, check_media(records), skip=False) is records


def test_evaluation_shares_the_rule():
    from videothinker.eval import runner

    assert runner.media_exists is media_mod.media_exists
    assert runner.load_record_visual is media_mod.load_record_visual
