"""HDF5 shards: pack the per-video loose stage outputs into a few large files, and read them back.

This package is the one door between ``pipeline/`` and ``models/``. The flow stage leaves thousands
of small JPEG / 16-bit PNG files per video (docs/CONTRACTS.md); training reads random samples
from them for days. Packing them into ``shard-NNNNN.h5`` files of about ``target_mb`` each keeps
the file count small and the reads sequential within a file, and gives every byte a checksum.

Modules, by responsibility (import the names from them; this file holds no code):

* :mod:`pipeline.shards.codec` — the on-disk format: schema versions, layouts, field tables, and
  the decoders of the stored JPEG / PNG blobs with their CRC-32;
* :mod:`pipeline.shards.loose` — the per-video inputs (:class:`~pipeline.shards.loose.VideoInput`)
  and reading one video's loose stage outputs into samples;
* :mod:`pipeline.shards.writer` — the train / validation split by video, the shard writer and
  ``index.json`` (:func:`~pipeline.shards.writer.write_shards`);
* :mod:`pipeline.shards.reader` — :class:`~pipeline.shards.reader.ShardReader` and
  :func:`~pipeline.shards.reader.read_index`, what ``models/data.py`` uses;
* :mod:`pipeline.shards.validate` — ``python -m pipeline validate-shards``: re-read and check
  every sample of a shard folder.

Layout (schema version 2), chosen by measurement (benchmarks/bench_loader.py, docs/BENCHMARKS.md):

* ``raw`` (default): every field a decoded array in one group per sample (``arrays/NNNNNN``):
  the RGB image ``uint8``, the flow as the KITTI ``uint16`` (u, v, valid) array the flow stage's
  PNG holds, trimap and soft mask ``uint8``; each stored in square tiles of ``tile_size`` px with
  ``fletcher32`` and ``array_compression`` (Blosc-LZ4 with byte shuffle by default, through
  ``hdf5plugin``). A training crop reads, checks and decompresses only the tiles it overlaps
  (``ShardReader.read_sample(..., window=...)``), so no JPEG or PNG is decoded while training.
  3.5x the bytes of the loose files; a training read is ~4x faster than decoding them.
* ``mixed``: the JPEG frame byte-for-byte as the flow stage wrote it, in a variable-length
  ``uint8`` dataset (``h5py.vlen_dtype(np.uint8)``, one element per sample); the rest as in
  ``raw``. About half the size of ``raw``, ~30 % slower to read.
* ``encoded``: every field as the stage's encoded bytes (JPEG, 16-bit PNG, 8-bit PNGs): the loose
  files' size and speed, in few files.

h5py's built-in ``lzf`` (``array_compression: lzf``) stores the flow as small as Blosc-LZ4 but
decompressed at ~150 MB/s here, 5x slower; shards written with it need no ``hdf5plugin`` to read.
Schema version 1 shards (single-chunk ``lzf`` arrays) are still read.

HDF5 (2.x) refuses filters on variable-length data (and before, filters only covered the
descriptors, not the heap holding the bytes), so ``fletcher32`` cannot protect encoded bytes:
every blob carries a CRC-32 (dataset ``crc32``, itself ``fletcher32``-checked) that the reader
verifies on every read.

Per-sample metadata and the guidance points of the guidance stage (CMP, Zhan et al. 2019, Sec. 3.2)
are small fixed-type datasets with ``fletcher32`` in every layout. The split into train and
validation is by video, so no video is seen on both sides. Every shard and ``index.json`` is
written under a temporary name in the same folder and renamed when complete, so a killed job
leaves nothing that looks complete; ``index.json`` is written last and marks the set as complete.

No torch here: ``models/data.py`` wraps :class:`~pipeline.shards.reader.ShardReader` in a torch
``Dataset``.
"""
