"""A forget request written from a split, as `one-shui-forget` reads one: the support portrait of each
forget identity (copied into the folder) and ``request.csv`` (``image``, ``identity``, ``targets``)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

from ..atomic import UMASK, writable_folder
from ..errors import OutputExistsError
from .datamodule import IdentityDataModule

REQUEST = "request.csv"


def write_request(data: IdentityDataModule, folder: str | os.PathLike) -> Path:
    """The request of ``data``'s split in the new ``folder``: whole or not at all (made beside it under
    another name, then renamed); its ``request.csv``."""
    folder = Path(folder)
    if os.path.lexists(folder):
        raise OutputExistsError(f"--request-folder {folder} exists; choose another folder or remove it")
    writable_folder(folder.parent, f"--request-folder {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    data.setup()
    table, (_, targets) = data.table, data.row_labels
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        os.chmod(tmp, 0o777 & ~UMASK)
        rows = []
        for k, row in enumerate(data.rows["support"]):
            source = table.path(row)
            image = f"{k:03d}{source.suffix.lower()}"
            shutil.copyfile(source, tmp / image)
            target = targets[row]
            text = (
                " ".join(str(int(v)) for v in target.tolist())
                if table.task == "multilabel"
                else str(int(target))
            )
            rows.append({"image": image, "identity": table.identities[row], "targets": text})
        with open(tmp / REQUEST, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=["image", "identity", "targets"])
            writer.writeheader()
            writer.writerows(rows)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / REQUEST
