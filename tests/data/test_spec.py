"""load_data spec parsing and select(): positions, ranges, n, and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError, UnknownNameError
from xaibench.data import Dataset, load_data, select


def _toy(n: int = 20) -> Dataset:
    return Dataset(
        x=torch.arange(n, dtype=torch.float32)[:, None], y=torch.arange(n) % 3, name="toy", split="all",
        modality="tabular", indices=torch.arange(n) + 100,
    )


def test_select_positions_and_ranges_in_order() -> None:
    picked = select(_toy(), indices=" 12, 3 ,5-7,0,")
    assert picked.x[:, 0].tolist() == [12, 3, 5, 6, 7, 0]
    assert picked.indices.tolist() == [112, 103, 105, 106, 107, 100]
    assert picked.y.tolist() == [0, 0, 2, 0, 1, 0]


def test_select_n_applies_after_indices() -> None:
    assert select(_toy(), indices="10-19", n=3).x[:, 0].tolist() == [10, 11, 12]
    assert select(_toy(), n=2).x[:, 0].tolist() == [0, 1]
    data = _toy()
    assert select(data) is data and select(data, n=50) is data


@pytest.mark.parametrize(
    "indices, n, message",
    [
        ("20", None, "no samples selected: position 20 is out of range for 20 samples \\(0-19\\)"),
        ("3-25", None, "no samples selected: position 25"),
        ("", None, "no samples selected from toy"),
        ("1-3", 0, "no samples selected from toy"),
        ("5-2", None, "bad range '5-2'"),
        ("1,a", None, "bad index 'a'"),
        ("-1", None, "bad index '-1'"),
        ("2-", None, "bad index '2-'"),
        (None, -1, "n must be 0 or more"),
    ],
)
def test_select_errors(indices: str | None, n: int | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        select(_toy(), indices=indices, n=n)


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'digts'; did you mean 'digits'\\?"):
        load_data("digts")
    with pytest.raises(UnknownNameError, match="did you mean 'wine'"):
        load_data("wnie:train")


def test_default_split_is_test_and_registered_names_win_over_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wine").mkdir()  # an image folder named like a built-in dataset
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "wine" / "a.png")
    assert load_data("wine").split == "test" and load_data("wine:").split == "test"
    assert load_data("wine").name == "wine" and load_data("wine").modality == "tabular"
    assert load_data("./wine").x.shape == (1, 1, 4, 5)


def test_importing_and_listing_datasets_does_not_import_torch() -> None:
    code = (
        "import sys; from xaibench.data import DATASETS; DATASETS.list(); "
        "DATASETS.get('shapes').description; sys.exit('torch._C' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
