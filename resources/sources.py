"""Where raw two-hand poses come from: InterHand2.6M MANO files, or the procedural generator.

InterHand2.6M files may be local paths or ``s3://bucket/key`` URIs; S3 objects are streamed (the
MANO annotation files reach gigabytes) with the same endpoint and credentials as the pipeline's
storage.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Literal

from dagster import ConfigurableResource
from pydantic import Field

from handsynth import userfiles
from handsynth.hand_model.model import HandModel
from handsynth.pose_table import PoseTable
from handsynth.sources import interhand, procedural
from handsynth.storage import S3Store, StorageError
from resources.storage import S3Storage


@contextlib.contextmanager
def open_uri(uri: str, s3: S3Storage | None) -> Iterator[Any]:
    """A binary stream for a local path (a regular file, not a link) or an ``s3://bucket/key`` URI."""
    if uri.startswith("s3://"):
        if s3 is None:
            raise ValueError(f"{uri}: an S3 URI needs the S3 storage settings (endpoint, credentials)")
        bucket, _, key = uri[5:].partition("/")
        if not bucket or not key:
            raise ValueError(f"{uri}: an S3 URI must be s3://bucket/key")
        try:
            stream = S3Store(bucket, s3.settings()).open(key, "rb")
        except StorageError as exc:
            raise FileNotFoundError(f"{uri}: cannot read the S3 object ({exc})") from exc
        with stream:
            yield stream
    else:
        try:
            fh = userfiles.open_file(uri)  # a link or special file is refused, not followed
        except userfiles.UserFileError as exc:
            raise FileNotFoundError(f"{uri}: cannot open the InterHand2.6M file ({exc.reason})") from None
        with fh:
            yield fh


class PoseSourceResource(ConfigurableResource):
    """``procedural`` (default, runs anywhere) or ``interhand`` (real InterHand2.6M MANO files)."""

    kind: Literal["procedural", "interhand"] = Field(default="procedural", description="Which source feeds raw_poses.")
    interhand_mano_files: list[str] = Field(
        default_factory=list,
        description="InterHand2.6M_{split}_MANO_NeuralAnnot.json paths or s3:// URIs.")
    interhand_prefix: str = Field(
        default="", description="Key prefix (under the storage prefix) whose *_MANO_NeuralAnnot.json files are all "
                                "loaded: the folder the new_interhand_files sensor watches.")
    s3: S3Storage | None = Field(default=None, description="S3 settings for s3:// sources.")

    def interhand_uris(self) -> list[str]:
        """Configured files plus every MANO annotation file under ``interhand_prefix``."""
        uris = list(self.interhand_mano_files)
        if self.interhand_prefix:
            if self.s3 is None:
                raise ValueError("interhand_prefix needs S3 storage settings")
            folder = "/".join(p.strip("/") for p in (self.s3.prefix, self.interhand_prefix) if p.strip("/"))
            uris += [f"s3://{self.s3.bucket}/{k}" for k in self.s3.object_store().list_keys(folder + "/")
                     if k.endswith("_MANO_NeuralAnnot.json")]
        return uris

    def load(self, model: HandModel, n_procedural: int, seed: int) -> tuple[PoseTable, dict[str, Any]]:
        """The raw pose table and a summary for asset metadata."""
        if self.kind == "procedural":
            table = procedural.generate_interacting_poses(model, n_procedural, seed=seed)
            counts = table.meta["interaction"].value_counts().to_dict()
            return table, {"source": "procedural generator", "seed": seed, "interactions": counts}
        uris = self.interhand_uris()
        if not uris:
            raise ValueError("pose source 'interhand' found no files: set interhand_mano_files (paths or s3:// URIs) "
                             "or put *_MANO_NeuralAnnot.json files under interhand_prefix")
        tables, summary = [], {"source": "InterHand2.6M", "files": {}}
        for uri in uris:
            split = next((s for s in ("train", "val", "test") if f"_{s}_" in uri), "train")
            stats = interhand.InterHandStats()
            with open_uri(uri, self.s3) as stream:
                tables.append(interhand.load_interhand_mano(stream, split, name=uri.rsplit("/", 1)[-1], stats=stats))
            summary["files"][uri] = {"frames_read": stats.frames_read, "frames_kept": stats.frames_kept,
                                     "frames_skipped": stats.frames_skipped}
        return PoseTable.concat(tables).validate("InterHand2.6M raw poses"), summary
