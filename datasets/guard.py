"""Corrupt training records: find them before training, skip them, report them.

TensorFlow checks a TFRecord's CRCs, but its DataLossError names neither the shard
nor the place. `scan_records` walks every shard once before training (counting the
records reads every byte anyway) with TensorFlow's own checksumming reader, so a
flipped byte or a truncated shard stops the run with one line naming the shard, the
record number and its byte offset; --skip-corrupt-records skips and reports them
instead (docs/reliability.md). Records that frame correctly but do not decode are
found lazily: the first error in training triggers `locate_bad_record`. `scan_sets`
scans every training and validation set of a run.
"""

import contextlib
import dataclasses
import json
import logging
import os

import tensorflow as tf

from datasets import pipeline, records
from utils import errors
from utils.cli import UserError

try:  # TensorFlow's checksumming reader at a byte offset: private, no public equivalent
    from tensorflow.python.lib.io._pywrap_record_io import RandomRecordReader
except ImportError:  # a future TensorFlow may move it: scan_records says what that costs
    RandomRecordReader = None

v1 = tf.compat.v1
log = logging.getLogger("guard")

_RECREATE_OR_SKIP = (f"re-create the shard with {records.RECREATE_HINT}, or pass "
                     "--skip-corrupt-records to train without its bad records")
MALFORMED = f"{records.NOT_AN_EXAMPLE}: malformed protocol buffer"
# A record is framed as uint64 length | uint32 masked crc32c(length) | data | uint32 crc(data).
HEADER = 12
FOOTER = 4


@dataclasses.dataclass(frozen=True)
class SkipTo:
    """Where --skip-corrupt-records puts what it finds (core/rundir.corrupt_records)."""

    clean_dir: str  # clean copies of damaged shards, in a folder per set: <clean_dir>/<kind>/
    report: str  # the JSON list of skipped records, by set


@dataclasses.dataclass
class BadRecord:
    shard: str
    index: int  # position of the record in its shard, from 0
    offset: int  # byte offset of its header in the shard
    reason: str

    def describe(self):
        return f"cannot read records {self.shard}: record #{self.index} at byte offset " \
               f"{self.offset} is corrupt ({self.reason})"


# ---------------------------------------------------------------- crc32c for resyncing

def _crc_of_byte(c):
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c


_TABLE = [_crc_of_byte(n) for n in range(256)]


def masked_crc32c(data):
    """TFRecord's masked CRC-32C; pure Python, so only for the 8-byte length headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_ok(raw, pos, size):
    """Whether a valid record header starts at pos: its length crc matches and it fits."""
    head = raw[pos:pos + HEADER]  # short at the shard's end: then it cannot fit either
    length = int.from_bytes(head[:8], "little")
    return (pos + HEADER + length + FOOTER <= size
            and masked_crc32c(head[:8]) == int.from_bytes(head[8:], "little"))


def iterate_shard(path, skip_corrupt=False):
    """Yield (index, offset, record bytes or BadRecord) for every record of one shard.

    Without skip_corrupt the first BadRecord ends the walk. With it, the walk
    continues after a bad record: past its data when its length header is
    intact, else at the next offset where a valid header starts.
    """
    size = os.path.getsize(path)
    reader = RandomRecordReader(path)
    offset, index, raw = 0, 0, None
    try:
        while offset < size:
            try:
                record, after = reader.read(offset)
            except IndexError:  # clean end of file
                return
            except tf.errors.OpError as e:
                yield index, offset, BadRecord(path, index, offset, errors.summary(e))
                if not skip_corrupt:
                    return
                if raw is None:
                    with open(path, "rb") as f:
                        raw = f.read()
                if _header_ok(raw, offset, size):
                    length = int.from_bytes(raw[offset:offset + 8], "little")
                    offset += HEADER + length + FOOTER
                else:
                    offset = next((p for p in range(offset + 1, size - HEADER)
                                   if _header_ok(raw, p, size) and _readable(reader, p)), size)
                index += 1
                continue
            yield index, offset, record
            offset, index = after, index + 1
    finally:
        reader.close()


def _readable(reader, offset):
    try:
        reader.read(offset)
    except (IndexError, tf.errors.OpError):
        return False
    return True


class _Decoder:
    """records.parse_example + records.decode in a private graph: bytes -> reason or None."""

    def __init__(self):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.serialized = v1.placeholder(tf.string, [])
            self.out = records.decode(records.parse_example(self.serialized))
        self.session = v1.Session(graph=self.graph)

    def problem(self, record):
        try:
            self.session.run(self.out, {self.serialized: record})
        except tf.errors.OpError as e:
            return errors.summary(e)
        except UnicodeDecodeError:  # TF fails to build the message about a malformed proto
            return MALFORMED
        return None

    def close(self):
        self.session.close()


def _bad_records(path, skip_corrupt, decoder):
    """(good (offset, next_offset) spans, [BadRecord], records read) of one shard."""
    good, bad = [], []
    for index, offset, record in iterate_shard(path, skip_corrupt):
        if isinstance(record, BadRecord):
            bad.append(record)
            continue
        problem = decoder.problem(record) if decoder else None
        if problem:
            bad.append(BadRecord(path, index, offset, problem))
        else:
            good.append((offset, offset + HEADER + len(record) + FOOTER))
    return good, bad


def scan_records(file_pattern, skip_to=None, kind="train"):
    """Check every record of the shards; returns (files to read, good records in each).

    Without skip_to: UserError at the first record that fails its checksum or is
    cut short (names shard, record and byte offset). With a SkipTo, every record is
    also decoded, bad ones are skipped and counted, and damaged shards are replaced
    by clean copies there; `kind` names the set in both.
    """
    skip_corrupt = skip_to is not None
    files = pipeline.list_records(file_pattern)
    if RandomRecordReader is None:
        if skip_corrupt:
            raise UserError(f"--skip-corrupt-records needs TensorFlow's RandomRecordReader "
                            f"(tensorflow.python.lib.io._pywrap_record_io), which TensorFlow "
                            f"{tf.__version__} lacks: train without the flag after re-creating "
                            f"damaged shards with {records.RECREATE_HINT}")
        with record_errors(file_pattern, files):  # TensorFlow's public reader: no offsets
            return files, [sum(1 for _ in v1.io.tf_record_iterator(f)) for f in files]
    decoder = _Decoder() if skip_corrupt else None
    counts, all_bad, used = [], [], []
    try:
        for path in files:
            try:
                good, bad = _bad_records(path, skip_corrupt, decoder)
            except OSError as e:
                raise UserError(f"cannot read records {path} ({e.strerror})") from None
            if bad and not skip_corrupt:
                raise UserError(f"{bad[0].describe()}: {_RECREATE_OR_SKIP}")
            counts.append(len(good))
            all_bad += bad
            used.append(_clean_copy(path, good, os.path.join(skip_to.clean_dir, kind))
                        if bad else path)
    finally:
        if decoder:
            decoder.close()
    total = sum(counts)
    if all_bad:
        for bad in all_bad:
            log.warning("skipping %s", bad.describe())
        log.warning("--skip-corrupt-records: skipped %d corrupt %s records in %d shards; "
                    "trained on %d good ones (list in %s)", len(all_bad), kind,
                    len({b.shard for b in all_bad}), total, skip_to.report)
        _write_report(skip_to.report, kind, file_pattern, all_bad, total)
    if total == 0:
        raise UserError(f"records {file_pattern!r} hold no readable examples: re-run "
                        f"{records.RECREATE_HINT}")
    return used, counts


@dataclasses.dataclass
class Scanned:
    """Every record set of a run, checked (scan_sets)."""

    # one training set: its files; several: a tuple of pipeline.RecordSets
    train_files: list | tuple
    counts: list  # good records per training file; several sets: one such list per set
    val_files: list  # one list of files per validation set; [] without one
    weights: tuple  # the training sets' weights: () for one set, else concrete


def scan_sets(train_records, val_records, weights=(), skip_to=None):
    """scan_records of every training set, then of every validation set, which checks
    every record once (the count reads them all anyway).

    train_records, val_records: a glob or a tuple of them (config.Config's). One
    training glob: its files and their counts, as always. Several: a tuple of
    pipeline.RecordSets, one list of counts per set, and the weights made concrete
    (default: each set's record count), so config.json says how the sets mixed.
    """
    def scan(pattern, kind, name, several):
        return scan_records(pattern, skip_to, f"{kind}-{name}" if several else kind)

    train, val = pipeline.patterns(train_records), pipeline.patterns(val_records)
    scanned = [scan(p, "train", n, len(train) > 1)
               for p, n in zip(train, pipeline.set_names(train))]
    val_files = [scan(p, "val", n, len(val) > 1)[0]
                 for p, n in zip(val, pipeline.set_names(val))]
    if len(train) == 1:
        return Scanned(*scanned[0], val_files, weights)
    weights = weights or tuple(float(sum(c)) for _, c in scanned)
    sets = tuple(pipeline.RecordSet(tuple(f), tuple(c), w) for (f, c), w in zip(scanned, weights))
    for pattern, each in zip(train, sets):
        log.info("train set %s: %d records, weight %g (%.0f%% of the windows)", pattern,
                 sum(each.counts), each.weight, 100 * each.weight / sum(weights))
    return Scanned(sets, [list(c) for _, c in scanned], val_files, weights)


def _clean_copy(path, spans, out_dir):
    """Copy a shard's good records byte for byte (framing and CRCs included) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.basename(path))

    def copy(dst):
        with open(path, "rb") as src:
            for start, stop in spans:
                src.seek(start)
                dst.write(src.read(stop - start))

    return errors.write_atomic(target, copy)


def _write_report(path, kind, file_pattern, bad, good):
    report = {}
    with contextlib.suppress(OSError, ValueError):
        with open(path) as f:
            report = json.load(f)
    report[kind] = {"records": file_pattern, "good": good, "skipped": len(bad),
                    "bad": [dataclasses.asdict(b) for b in bad]}
    errors.write_json(path, report)


def locate_bad_record(files):
    """The first record of files that fails framing, parsing or decoding, or None."""
    decoder = _Decoder()
    try:
        for path in files:
            _, bad = _bad_records(path, False, decoder)
            if bad:
                return bad[0]
    finally:
        decoder.close()
    return None


@contextlib.contextmanager
def record_errors(file_pattern, files=None):
    """Turn a corrupt/unreadable record met inside sess.run into one UserError line that
    names the shard, record and byte offset (found by scanning again), else the pattern."""
    try:
        yield
    except records.READ_ERRORS as e:
        log.warning("a record of %s failed to read or decode: scanning the shards to name it",
                    file_pattern)
        try:  # naming the record needs the offset reader; without it the line names the files
            where = RandomRecordReader and locate_bad_record(
                files or pipeline.list_records(file_pattern))
        except (UserError, OSError, tf.errors.OpError):
            where = None
        if where is None:
            reason = records.read_error_reason(e, MALFORMED)
            raise UserError(f"cannot read records {file_pattern!r} ({type(e).__name__}: "
                            f"{reason}): re-create them with {records.RECREATE_HINT}") from None
        raise UserError(f"{where.describe()}: {_RECREATE_OR_SKIP}") from None


