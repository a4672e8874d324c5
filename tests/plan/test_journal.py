"""The plan journal: atomic segments, torn records, several writers, reopening."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import Journal, SearchPlan
from hippo_dask.plan._journal import decode_line, encode_line


def trial(milestone: int) -> hd.Trial:
    return hd.Trial(lr=seq.StepLR(0.1, 0.1, [milestone]), optimizer="sgd")


def segments(root: Path) -> list[Path]:
    return sorted((root / "plan").glob("*.jsonl"))


def test_lines_round_trip_and_detect_damage() -> None:
    line = encode_line({"op": "metrics", "values": {"acc": float("nan")}})
    record = decode_line(line)
    assert record is not None and record["op"] == "metrics"
    assert decode_line(line[:-1]) is None  # no newline: torn
    assert decode_line(line[:20] + b"\n") is None  # cut short
    flipped = bytearray(line)
    flipped[15] ^= 0x01
    assert decode_line(bytes(flipped)) is None  # CRC mismatch
    assert decode_line(b"garbage\n") is None


def test_nothing_is_written_until_flush_and_each_flush_is_one_segment(tmp_path: Path) -> None:
    plan = SearchPlan.open(str(tmp_path))
    plan.add(trial(30), 60)
    plan.add(trial(40), 60)
    assert segments(tmp_path) == []
    plan.flush()
    plan.flush()  # nothing new: no empty segment
    assert len(segments(tmp_path)) == 1
    with plan:
        plan.add(trial(50), 60)
    assert len(segments(tmp_path)) == 2
    assert not [p for p in (tmp_path / "plan").iterdir() if p.name.startswith(".")]


def test_reopen_replays_requests_checkpoints_metrics_and_profiles(tmp_path: Path) -> None:
    with SearchPlan.open(str(tmp_path)) as plan:
        a = plan.add(trial(30), 60)
        b = plan.add(trial(40), 60)
        plan.record_checkpoint(b.node, 30, "ckpt/30")
        plan.record_metrics(a.node, 60, {"acc": 0.75})
        plan.record_profile(b.node, 0.125)
        plan.forget_checkpoint(b.node, 30)
        plan.record_checkpoint(b.node, 45, "ckpt/45")
    again = SearchPlan.open(f"file://{tmp_path}")
    assert again.stats() == plan.stats()
    a2, b2 = again.nodes
    assert a2.checkpoints == {} and b2.checkpoints == {45: "ckpt/45"}
    assert a2.metrics == {60: {"acc": 0.75}}
    assert b2.seconds_per_step == 0.125
    assert again.metrics(trial(30), 60) == {"acc": 0.75}


def test_a_torn_last_record_is_ignored_with_a_warning(tmp_path: Path) -> None:
    with SearchPlan.open(str(tmp_path)) as plan:
        a = plan.add(trial(30), 60)
        plan.record_metrics(a.node, 60, {"acc": 0.75})
    (segment,) = segments(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # crash in the middle of the last record
    with pytest.warns(hd.HippoWarning, match="last line is torn or corrupt"):
        again = SearchPlan.open(str(tmp_path))
    assert again.stats().requested_steps == 60
    assert again.nodes[0].metrics == {}  # never half-applied
    assert again.stats().pending == 1


def test_a_corrupt_record_in_the_middle_is_skipped_and_named(tmp_path: Path) -> None:
    with SearchPlan.open(str(tmp_path)) as plan:
        plan.add(trial(30), 60)
        plan.add(trial(40), 60)
        plan.add(trial(50), 60)
    (segment,) = segments(tmp_path)
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"steps":60', b'"steps":61')
    segment.write_bytes(b"".join(lines))
    with pytest.warns(hd.HippoWarning, match=f"{segment.name}: line 2"):
        again = SearchPlan.open(str(tmp_path))
    assert again.stats().trials == 2


def test_temporary_files_of_a_crashed_writer_are_not_read(tmp_path: Path) -> None:
    with SearchPlan.open(str(tmp_path)) as plan:
        plan.add(trial(30), 60)
    (tmp_path / "plan" / ".0-dead-000000.jsonl.tmp").write_bytes(encode_line({"op": "request"})[:5])
    assert SearchPlan.open(str(tmp_path)).stats() == plan.stats()


def test_two_writers_see_each_other_after_refresh(tmp_path: Path) -> None:
    one = SearchPlan.open(str(tmp_path))
    two = SearchPlan.open(str(tmp_path))
    r1 = one.add(trial(30), 60)
    r2 = two.add(trial(40), 60)  # two does not know one's trial yet: its own root
    one.flush()
    two.flush()
    assert one.refresh() == 1 and two.refresh() == 1
    assert one.stats().unique_steps == two.stats().unique_steps == 90
    one.record_metrics(r1.node, 60, {"acc": 0.5})
    two.record_checkpoint(r2.node, 45, "ckpt/two-45")
    one.flush()
    two.flush()
    one.refresh()
    two.refresh()
    assert two.metrics(trial(30), 60) == {"acc": 0.5}
    assert one.latest_checkpoint(trial(40), 60) == (45, "ckpt/two-45")
    # A third process replays both writers into the same plan.
    three = SearchPlan.open(str(tmp_path))
    assert three.stats() == one.stats() == two.stats()


def test_segments_are_named_by_session_so_writers_never_collide(tmp_path: Path) -> None:
    a, b = Journal(str(tmp_path)), Journal(str(tmp_path))
    assert a.session != b.session
    a.append([{"op": "x"}])
    b.append([{"op": "y"}])
    assert len(os.listdir(tmp_path / "plan")) == 2


def test_an_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(hd.JournalError, match="nosuchfs://bucket"):
        SearchPlan.open("nosuchfs://bucket/study")


def test_a_segment_that_cannot_be_read_loses_nothing_read_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = SearchPlan.open(str(tmp_path))
    with SearchPlan.open(str(tmp_path)) as first:
        request = first.add(trial(30), 60)
        first.record_metrics(request.node, 60, {"acc": 0.5})
    with SearchPlan.open(str(tmp_path)) as second:  # its segment sorts after first's
        second.add(trial(40), 60)
    journal = reader.journal
    assert journal is not None
    real = journal.fs.cat_file
    unreadable = segments(tmp_path)[-1].name

    def cat_file(path: str, *args: object, **kwargs: object) -> bytes:
        if path.endswith(unreadable):
            raise PermissionError(f"{path}: access denied")
        return real(path, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(journal.fs, "cat_file", cat_file)
    with pytest.raises(hd.JournalError, match=f"cannot read .*{unreadable}"):
        reader.refresh()
    assert reader.metrics(trial(30), 60) == {"acc": 0.5}  # applied although the next failed
    monkeypatch.setattr(journal.fs, "cat_file", real)
    assert reader.refresh() == 1 and reader.stats().trials == 2  # read once it can be
