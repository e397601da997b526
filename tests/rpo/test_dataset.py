"""Pair datasets on disk: exact round trip, and a half-written dataset is never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from scorealign.preference.rpo.dataset import (DatasetError, IncompleteDatasetError, PairWriter, quantize,
                                    read_pairs)


def _pairs(n, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = quantize(torch.rand(2 * n, c, 8, 8, generator=g) * 2 - 1)
    return [(f"a handwritten {i % 10}", imgs[2 * i], imgs[2 * i + 1], "rpo",
             {"critique": {"text": f"pair {i}"}, "n": i}) for i in range(n)]


def _write(path, pairs, **kw):
    with PairWriter(path, info={"what": "test"}, **kw) as w:
        for p in pairs:
            w.add(*p)
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_is_identical(tmp_path, channels):
    pairs = _pairs(5, channels)
    ds = read_pairs(_write(tmp_path / "ds", pairs))
    assert len(ds) == 5 and ds.info == {"what": "test"}
    for i, (prompt, w, l, src, meta) in enumerate(pairs):
        rec = ds.records[i]
        assert (rec["prompt"], rec["source"], rec["meta"], rec["id"]) == (prompt, src, meta, i)
        assert torch.equal(ds.chosen[i], w) and torch.equal(ds.rejected[i], l)
    assert read_pairs(tmp_path / "ds", limit=2).prompts == [p[0] for p in pairs[:2]]


@pytest.mark.slow
def test_killed_writer_is_detected(tmp_path):
    """A writer SIGKILLed mid-way leaves files but no manifest: reading refuses it."""
    path = tmp_path / "killed"
    code = f"""
import os, signal, torch
from scorealign.preference.rpo.dataset import PairWriter
w = PairWriter({str(path)!r})
for i in range(3):
    w.add("a handwritten 1", torch.zeros(1, 8, 8), torch.ones(1, 8, 8), "rpo")
w._file.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (path / "pairs.jsonl").read_text().count("\n") == 3  # the pairs are there...
    with pytest.raises(IncompleteDatasetError, match="writer did not finish"):
        read_pairs(path)                                          # ...but never used


def test_exception_inside_writer_leaves_it_unsealed(tmp_path):
    with pytest.raises(RuntimeError):
        with PairWriter(tmp_path / "ds") as w:
            w.add("a handwritten 1", torch.zeros(1, 8, 8), torch.ones(1, 8, 8), "rpo")
            raise RuntimeError("builder crashed")
    with pytest.raises(IncompleteDatasetError):
        read_pairs(tmp_path / "ds")


def test_tampering_and_malformed_records_are_errors(tmp_path):
    path = _write(tmp_path / "ds", _pairs(3))
    lines = (path / "pairs.jsonl").read_text().splitlines()
    (path / "pairs.jsonl").write_text("\n".join(lines[:2]) + "\n")  # a record lost
    with pytest.raises(IncompleteDatasetError, match="changed after the manifest"):
        read_pairs(path)
    path = _write(tmp_path / "ds2", _pairs(3))
    os.remove(path / "images" / "000001_l.png")
    with pytest.raises(IncompleteDatasetError, match="000001_l.png: image missing"):
        read_pairs(path)
    path = _write(tmp_path / "ds3", _pairs(2))
    bad = (path / "pairs.jsonl").read_text().replace('"prompt"', '"promt"', 1)
    (path / "pairs.jsonl").write_text(bad)
    manifest = json.loads((path / "manifest.json").read_text())
    import hashlib
    manifest["pairs_sha256"] = hashlib.sha256(bad.encode()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"pairs.jsonl:1: missing field\(s\) \['prompt'\]"):
        read_pairs(path)


def test_writer_refuses_bad_pairs_and_overwrites_only_when_asked(tmp_path):
    path = _write(tmp_path / "ds", _pairs(1))
    with pytest.raises(FileExistsError, match="complete pair dataset"):
        PairWriter(path)
    w = PairWriter(path, overwrite=True)
    with pytest.raises(DatasetError, match="differ in shape"):
        w.add("a handwritten 1", torch.zeros(1, 8, 8), torch.zeros(1, 16, 16), "rpo")
    with pytest.raises(DatasetError, match="non-empty string"):
        w.add(" ", torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), "rpo")
    w.add("a handwritten 1", torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), "rpo")
    with pytest.raises(DatasetError, match="differs from the dataset"):
        w.add("a handwritten 1", torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), "rpo")
    w.close()
    assert len(read_pairs(path)) == 1
