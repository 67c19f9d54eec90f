"""The section-3 analysis on images with objects pasted at known places (boxes known)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aadscale.analysis import LimeOptions, StudyOptions, analyze, study_batch, summarize
from aadscale.analysis.tables import shares, to_markdown
from aadscale.attention import area_matched_mask, forward_with_cam, resize
from aadscale.models.normalize import PixelModel

SIZE, OBJ = 32, 10


def pasted(n: int, seed: int):
    """Grey noise with one 10x10 object per image: red for class 0, blue for class 1; its box mask."""
    g = torch.Generator().manual_seed(seed)
    x = 0.35 + 0.15 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    box = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    for i in range(n):
        r, c = torch.randint(0, SIZE - OBJ + 1, (2,), generator=g).tolist()
        x[i, :, r:r + OBJ, c:c + OBJ] = colours[y[i]].view(3, 1, 1)
        box[i, r:r + OBJ, c:c + OBJ] = True
    return x, y, box


def gap_net() -> PixelModel:
    """Two convs (the attention layer, 16x16) and a max-pooled linear head."""
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())
    net = nn.Sequential(body, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    return PixelModel(net, "0", (0.5,) * 3, (0.25,) * 3, 2, 3)


def train_gap_net(seed: int = 0) -> PixelModel:
    """The net trained for a few seconds to tell the objects apart (it must look at them); other
    seeds stand in for other machines when margins are measured (benchmarks/test_margins.py)."""
    torch.manual_seed(seed)
    x, y, _ = pasted(512, seed=1)
    model = gap_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    """The net of seed 0."""
    return train_gap_net()


def test_trained_model_attends_to_the_boxes(trained):
    x, y, box = pasted(64, seed=2)
    records = study_batch(trained, x, y, box, StudyOptions(eps=8 / 255))
    assert len(records) >= 60  # (almost) all correctly classified
    ious = torch.tensor([r["box_iou"] for r in records])
    # over 8 training seeds x 2 kernel sets (benchmarks/test_margins.py): mean IoU 0.76-0.86,
    # against another image's box (chance) 0.10-0.11
    assert ious.mean() > 0.6, ious
    chance = study_batch(trained, x, y, box.roll(1, 0), StudyOptions(eps=8 / 255))
    assert torch.tensor([r["box_iou"] for r in chance]).mean() < ious.mean() - 0.4


def test_area_matched_masks_have_exactly_the_box_area(trained):
    x, y, box = pasted(16, seed=3)
    cam = resize(forward_with_cam(trained, x, y).cam, (SIZE, SIZE))
    mask = area_matched_mask(cam, box.flatten(1).sum(1))
    assert mask.flatten(1).sum(1).tolist() == [OBJ * OBJ] * 16


def test_tables_add_up_with_both_splits(trained):
    x, y, box = pasted(64, seed=4)
    opts = StudyOptions(eps=0.3, attack="pgd10", top_ns=(5, 10, 300))
    # both splits on any machine: eps 0 fools no image; PGD-10 at eps 0.3 fooled 33-64 of these
    # 64 images over 8 training seeds x 2 kernel sets (benchmarks/test_margins.py)
    records = study_batch(trained, x[:16], y[:16], box[:16], replace(opts, eps=0.0)) + \
        study_batch(trained, x[16:], y[16:], box[16:], opts)
    fooled = sum(r["fooled"] for r in records)
    assert 0 < fooled < len(records), "the two eps should split the images"
    s = summarize(records, opts.top_ns)
    t1 = s["table1"]
    assert t1["fooled"]["share"] + t1["resisting"]["share"] == pytest.approx(100.0, abs=1e-9)
    assert t1["fooled"]["n"] + t1["resisting"]["n"] == len(records) == s["n"]
    low = [r for r in records if r["box_iou"] < 0.5]
    assert s["table2"]["n"] == len(low)
    if low:
        assert s["table2"]["fooled"]["share"] + s["table2"]["resisting"]["share"] == pytest.approx(100.0)
    assert s["table3"]["300"]["cells"] == 256  # capped at the 16x16 map, and said so
    assert "300 (capped at 256)" in to_markdown(s)
    assert s["table3"]["300"]["fooled"] == pytest.approx(1.0)  # all cells vs all cells


def test_shares_round_to_exactly_100():
    assert shares({"fooled": 1, "resisting": 2}) == {"fooled": 33.3, "resisting": 66.7}
    assert sum(shares({"fooled": 2, "resisting": 1}).values()) == 100.0
    with pytest.raises(ValueError):
        shares({"fooled": 0, "resisting": 0})


def test_analyze_writes_tables_records_and_lime(trained, tmp_path):
    x, y, box = pasted(6, seed=5)
    opts = StudyOptions(eps=8 / 255, lime=True, lime_features=(2, 3),
                        lime_options=LimeOptions(segmentation="slic", num_samples=60, n_segments=12))
    report = analyze(trained, [(x[:3], y[:3], box[:3]), (x[3:], y[3:], box[3:])], opts,
                     out_dir=tmp_path, limit=5, progress=False)
    assert report["images_read"] == 5
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == report["analysed"] > 0
    rec = json.loads(lines[0])
    assert 0 <= rec["lime2_box_iou"] <= 1 and 0 <= rec["lime3_adv_iou"] <= 1
    assert set(report["table4"]) == {"2", "3"} and set(report["table5"]) == {"2", "3"}
    assert "Table 5" in (tmp_path / "tables.md").read_text()
    csv = (tmp_path / "tables.csv").read_text().splitlines()
    assert csv[0] == "table,row,split,metric,value" and any(line.startswith("5,") for line in csv)
    assert json.loads((tmp_path / "tables.json").read_text())["table1"]["resisting"]["n"] >= 0


def test_no_correct_image_is_a_clear_error():
    x, y, box = pasted(4, seed=6)
    model = gap_net().eval()
    with torch.no_grad():
        wrong = 1 - model(x).argmax(1)
    with pytest.raises(ValueError, match="target='predicted'"):
        analyze(model, [(x, wrong, box)], progress=False)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="not understood"):
        StudyOptions(attack="pgdx")
    with pytest.raises(ValueError, match="target"):
        StudyOptions(target="label")
