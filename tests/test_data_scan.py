"""DALI's corrupt-file scan: verdicts follow each file's size and mtime; the ranks share the decoding."""
from __future__ import annotations

import io
import json
import logging

import pytest
from PIL import Image

from aadscale.data import scan
from aadscale.data.scan import readable
from aadscale.data.sources import FileSamples, read_folder
from aadscale.errors import InputError


def jpeg_bytes(shade: int) -> bytes:
    """A valid 16x16 JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 40, 200)).save(buf, "JPEG")
    return buf.getvalue()


def write_split(root, split, n=6, corrupt=(1, 4)):
    """``root/split/a/NN.JPEG``: ``n`` images, those at ``corrupt`` truncated (no decodable JPEG)."""
    folder = root / split / "a"
    folder.mkdir(parents=True)
    for i in range(n):
        data = jpeg_bytes(10 * i)
        (folder / f"{i:02d}.JPEG").write_bytes(data[:len(data) // 2] if i in corrupt else data)
    return folder


def counting_decodes(monkeypatch):
    """Replace ``decode_error`` (the serial path looks it up by name) by a copy that records its paths."""
    seen: list[str] = []
    real = scan.decode_error

    def decode(path: str) -> str:
        seen.append(path)
        return real(path)
    monkeypatch.setattr(scan, "decode_error", decode)
    return seen


def test_replaced_files_get_a_new_verdict(tmp_path):
    folder = write_split(tmp_path, "train", corrupt=(1,))
    samples = read_folder(tmp_path / "train")
    assert str(folder / "01.JPEG") not in readable(samples, workers=1, cache_dir=tmp_path / "cache").paths
    (folder / "01.JPEG").write_bytes(jpeg_bytes(99))  # repaired
    (folder / "03.JPEG").write_bytes(b"<html>not found</html>")  # replaced by a corrupt file
    kept = readable(samples, workers=1, cache_dir=tmp_path / "cache").paths
    assert str(folder / "01.JPEG") in kept and str(folder / "03.JPEG") not in kept and len(kept) == 5


def test_second_scan_decodes_only_new_and_changed_files(tmp_path, monkeypatch, caplog):
    folder = write_split(tmp_path, "train")
    cache_dir = tmp_path / "cache"
    seen = counting_decodes(monkeypatch)
    readable(read_folder(tmp_path / "train"), workers=1, cache_dir=cache_dir)
    assert len(seen) == 6
    seen.clear()
    readable(read_folder(tmp_path / "train"), workers=1, cache_dir=cache_dir)
    assert seen == []
    (folder / "02.JPEG").write_bytes(jpeg_bytes(7)[:100])  # changed
    (folder / "09.JPEG").write_bytes(jpeg_bytes(8))  # new
    (folder / "05.JPEG").unlink()  # removed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aadscale.data"):
        kept = readable(read_folder(tmp_path / "train"), workers=1, cache_dir=cache_dir)
    assert sorted(seen) == [str(folder / "02.JPEG"), str(folder / "09.JPEG")]
    assert [p.rsplit("/", 1)[1] for p in kept.paths] == ["00.JPEG", "03.JPEG", "09.JPEG"]
    assert "6 images: 2 decoded (new or changed), 4 from the cache" in caplog.text
    assert caplog.text.count("unreadable image skipped") == 3
    [cache] = (cache_dir / "scans").glob("*.json")
    entries = json.loads(cache.read_text())
    assert sorted(entries) == [str(folder / f"{i:02d}.JPEG") for i in (0, 1, 2, 3, 4, 9)]
    stat = (folder / "09.JPEG").stat()
    assert entries[str(folder / "09.JPEG")] == [stat.st_size, stat.st_mtime_ns, ""]
    assert entries[str(folder / "02.JPEG")][2].startswith("OSError")


def test_listings_of_one_folder_share_the_cache_without_losing_entries(tmp_path, monkeypatch):
    write_split(tmp_path, "train")
    whole = read_folder(tmp_path / "train")
    first, second = whole.keep([0, 1, 2]), whole.keep([3, 4, 5])  # e.g. train.txt and val.txt of one folder
    seen = counting_decodes(monkeypatch)
    for samples in (first, second, first, second):
        readable(samples, workers=1, cache_dir=tmp_path / "cache")
    assert sorted(seen) == whole.paths  # each file decoded once


def test_empty_listing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        readable(FileSamples([], [], []), workers=1, cache_dir=tmp_path)


def _rank_worker(rank: int, port: int, root: str) -> None:
    """One rank of two: scans train then val twice (as two runs' build_loader calls would), writing
    the files it decoded, what it kept, its cache writes and its log to ``root``."""
    from pathlib import Path

    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    logger = logging.getLogger("aadscale.data")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.FileHandler(f"{root}/log.rank{rank}"))
    decoded: list[str] = []
    saves: list[str] = []
    real_decode, real_save = scan.decode_error, scan.save
    scan.decode_error = lambda path: decoded.append(path) or real_decode(path)
    scan.save = lambda cache, entries: saves.append(str(cache)) or real_save(cache, entries)
    kept = []
    for _ in range(2):
        for split in ("train", "val"):
            samples = read_folder(Path(root) / split)
            kept.append(readable(samples, workers=2, cache_dir=Path(root) / "cache").paths)
    Path(f"{root}/rank{rank}.json").write_text(json.dumps({"decoded": decoded, "kept": kept, "saves": saves}))
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (gloo)
def test_two_ranks_share_the_decoding_and_agree(tmp_path):
    import socket

    import torch.multiprocessing as mp
    train, val = write_split(tmp_path, "train", n=7), write_split(tmp_path, "val", n=5, corrupt=(0,))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    splits = [read_folder(tmp_path / "train").paths, read_folder(tmp_path / "val").paths]
    for r in (0, 1):  # rank r decodes files r, r + 2, ... of each split, and none in the second run
        assert ranks[r]["decoded"] == splits[0][r::2] + splits[1][r::2]
    expected = [[str(train / f"{i:02d}.JPEG") for i in (0, 2, 3, 5, 6)],
                [str(val / f"{i:02d}.JPEG") for i in (1, 2, 3, 4)]] * 2
    assert ranks[0]["kept"] == ranks[1]["kept"] == expected
    assert len(ranks[0]["saves"]) == 2 and ranks[1]["saves"] == []  # the first run's two splits
    log0, log1 = (tmp_path / "log.rank0").read_text(), (tmp_path / "log.rank1").read_text()
    assert log0.count("unreadable image skipped") == 2 * 3 and log1 == ""
    assert "7 images: 7 decoded" in log0 and "7 images: 0 decoded (new or changed), 7 from the cache" in log0
