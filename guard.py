"""Training's defences against bad data and bad disks.

Corrupt records. A TFRecord is framed as

    uint64 length | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)

and TensorFlow checks both CRCs, but its DataLossError names neither the shard
nor the place. `scan_records` walks every shard once before training (the
trainer read every byte to count records anyway) with TensorFlow's own
checksumming reader, so a flipped byte or a truncated shard stops the run with
one line naming the shard, the record number and its byte offset. With
--skip-corrupt-records it also parses and decodes every record, and shards with
bad records are replaced, for this run only, by copies of their good records in
`<run_dir>/clean-records/`; what was skipped is logged and written to
`<run_dir>/corrupt_records.json`. Records that frame correctly but do not decode
(a damaged PNG inside, another schema) are found lazily: the first error in
training triggers `locate_bad_record`, which names the record the same way.

Bad disks: `disk_errors` turns "no space", "file too large", "permission
denied" and "read-only file system" from Python or TensorFlow into one clear
line; `restorable_checkpoint` picks the newest checkpoint that can actually be
read, in case the newest one listed was torn by a crash.
"""

import contextlib
import dataclasses
import errno
import json
import logging
import os
import threading

import tensorflow as tf

import config
import data
import records
from cli import UserError

try:  # TensorFlow's checksumming reader that reads one record at a byte offset
    from tensorflow.python.lib.io._pywrap_record_io import RandomRecordReader
except ImportError:  # pragma: no cover - a future TensorFlow may move it
    RandomRecordReader = None

v1 = tf.compat.v1
log = logging.getLogger("guard")

CLEAN_DIR = "clean-records"
MALFORMED = "not a tf.train.Example: malformed protocol buffer"
REPORT = "corrupt_records.json"
HEADER = 12  # uint64 length + uint32 crc of the length
FOOTER = 4  # uint32 crc of the data
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
               errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
               errno.EDQUOT: "disk quota exceeded", errno.EPERM: "operation not permitted"}
DISK_WORDS = ("No space left", "File too large", "Permission denied", "Read-only file system",
              "Disk quota exceeded", "Operation not permitted")


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

def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def masked_crc32c(data):
    """TFRecord's masked CRC-32C; pure Python, so only for the 8-byte length headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_ok(raw, pos, size):
    """Whether a valid record header starts at pos: its length crc matches and it fits."""
    head = raw[pos:pos + HEADER]
    if len(head) < HEADER:
        return False
    length = int.from_bytes(head[:8], "little")
    return (masked_crc32c(head[:8]) == int.from_bytes(head[8:], "little")
            and pos + HEADER + length + FOOTER <= size)


# ---------------------------------------------------------------- scanning

def _reason(error):
    text = getattr(error, "message", None) or str(error)
    # TensorFlow's reader says "truncated record at N' failed with ..." / "corrupted record at N".
    if "truncated record" in text:
        return "truncated record: the shard ends inside it"
    if "corrupted record" in text:
        return "corrupted record: its checksum does not match"
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__


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
                yield index, offset, BadRecord(path, index, offset, _reason(e))
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
            return data.error_summary(e)
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


def scan_records(file_pattern, run_dir=None, skip_corrupt=False, kind="train"):
    """Check every record of the shards; returns (files to read, number of good records).

    Without skip_corrupt: UserError at the first record that fails its checksum
    or is cut short (names shard, record and byte offset). With skip_corrupt
    (needs run_dir), every record is also decoded, bad ones are skipped and
    counted, and damaged shards are replaced by clean copies in run_dir.
    """
    files = data.list_records(file_pattern)
    if RandomRecordReader is None:  # pragma: no cover
        return files, _count_with_tf(files, file_pattern)
    decoder = _Decoder() if skip_corrupt else None
    total, all_bad, used = 0, [], []
    try:
        for path in files:
            try:
                good, bad = _bad_records(path, skip_corrupt, decoder)
            except OSError as e:
                raise UserError(f"cannot read records {path} ({e.strerror})") from None
            if bad and not skip_corrupt:
                raise UserError(f"{bad[0].describe()}: re-create the shard with convert_coco.py "
                                "or convert_pets.py, or pass --skip-corrupt-records to train "
                                "without its bad records")
            total += len(good)
            all_bad += bad
            used.append(_clean_copy(path, good, run_dir, kind) if bad else path)
    finally:
        if decoder:
            decoder.close()
    if all_bad:
        for bad in all_bad:
            log.warning("skipping %s", bad.describe())
        log.warning("--skip-corrupt-records: skipped %d corrupt %s records in %d shards; "
                    "trained on %d good ones (list in %s)", len(all_bad), kind,
                    len({b.shard for b in all_bad}), total, os.path.join(run_dir, REPORT))
        _write_report(run_dir, kind, file_pattern, all_bad, total)
    if total == 0:
        raise UserError(f"records {file_pattern!r} hold no readable examples: re-run "
                        "convert_coco.py or convert_pets.py")
    return used, total


def _count_with_tf(files, file_pattern):  # pragma: no cover - fallback without offsets
    total = 0
    for path in files:
        with data.record_errors(path):
            total += sum(1 for _ in tf.data.TFRecordDataset(path))
    return total


def _clean_copy(path, spans, run_dir, kind):
    """Copy a shard's good records byte for byte (framing and CRCs included)."""
    if run_dir is None:
        raise ValueError("skipping corrupt records needs a run_dir for the clean copies")
    out_dir = os.path.join(run_dir, CLEAN_DIR, kind)
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.basename(path))
    tmp = target + ".tmp"
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for start, stop in spans:
            src.seek(start)
            dst.write(src.read(stop - start))
    os.replace(tmp, target)
    return target


def _write_report(run_dir, kind, file_pattern, bad, good):
    path = os.path.join(run_dir, REPORT)
    report = {}
    with contextlib.suppress(OSError, ValueError):
        with open(path) as f:
            report = json.load(f)
    report[kind] = {"records": file_pattern, "good": good, "skipped": len(bad),
                    "bad": [dataclasses.asdict(b) for b in bad]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def locate_bad_record(files):
    """The first record of files that fails framing, parsing or decoding, or None."""
    if RandomRecordReader is None:  # pragma: no cover
        return None
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
    """Like data.record_errors, but names the shard, record and offset of the bad record."""
    try:
        yield
    # TensorFlow raises UnicodeDecodeError instead of InvalidArgumentError when the record
    # is not a valid Example proto (its message quotes the raw bytes).
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, UnicodeDecodeError) as e:
        log.warning("a record of %s failed to read or decode: scanning the shards to name it",
                    file_pattern)
        try:
            where = locate_bad_record(files or data.list_records(file_pattern))
        except (UserError, OSError, tf.errors.OpError):
            where = None
        if where is None:
            reason = MALFORMED if isinstance(e, UnicodeDecodeError) else data.error_summary(e)
            raise UserError(f"cannot read records {file_pattern!r} ({type(e).__name__}: "
                            f"{reason}): re-create them with convert_coco.py or "
                            "convert_pets.py") from None
        raise UserError(f"{where.describe()}: re-create the shard with convert_coco.py or "
                        "convert_pets.py, or pass --skip-corrupt-records to train without its "
                        "bad records") from None


# ---------------------------------------------------------------- disks

def _disk_problem(error):
    """("what", "where") if error says the disk refused a write, else None."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return DISK_ERRNOS[error.errno], error.filename
    # TensorFlow reports it as OutOfRange/Unknown/..., and its event writer thread even as
    # IndexError: "<path>; File too large".
    text = (getattr(error, "message", None) or str(error)).strip()
    for words in DISK_WORDS:
        if words.lower() in text.lower():
            head = text.splitlines()[0].split(";")[0].strip()
            return words.lower(), head if head.startswith(os.sep) else None
    return None


@contextlib.contextmanager
def disk_errors(run_dir):
    """Turn a full disk / file-size limit / unwritable dir while writing run_dir into one line.

    Also quiets the traceback TensorFlow's event-writer thread prints for the same
    failure; the error reaches the trainer again when the writer is flushed.
    """
    previous = threading.excepthook

    def thread_hook(args):
        if _disk_problem(args.exc_value) is None:
            previous(args)

    threading.excepthook = thread_hook
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a disk problem
        problem = _disk_problem(e) or _disk_problem(e.__context__ or e)
        if problem is None:
            raise
        what, where = problem
        raise UserError(f"cannot write {where or run_dir} ({what}): free space or fix "
                        "permissions, then re-run the same command; it resumes from the last "
                        "complete checkpoint") from None
    finally:
        threading.excepthook = previous


def _readable_checkpoint(prefix):
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # reads the data file: a torn one fails here
    # The pybind reader raises IndexError for a short read, RuntimeError for a bad index.
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError):
        return False
    return True


def restorable_checkpoint(run_dir):
    """Newest checkpoint of run_dir that reads completely, or None when it has none.

    Logs any it passes over. Raises UserError when checkpoints are there but
    none reads: starting over would overwrite them, so the user decides.
    """
    try:
        state = tf.train.get_checkpoint_state(run_dir)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError) as e:
        log.warning("the checkpoint state file in %s is unreadable (%s): looking for "
                    "checkpoints by name", run_dir, _reason(e))
        state = None
    on_disk = [n[:-len(".index")] for n in
               tf.io.gfile.glob(os.path.join(run_dir, config.CKPT_PREFIX + "-*.index"))]
    candidates = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in candidates:
        candidates.append(state.model_checkpoint_path)
    # get_checkpoint_state already puts run_dir in front of the state file's relative
    # entries, and the glob's names carry it: joining again doubled a relative run_dir.
    # No (readable) state file: fall back to the index files on disk.
    for path in sorted(candidates or on_disk, key=_step, reverse=True):
        if _readable_checkpoint(path):
            return path
        log.warning("checkpoint %s is unreadable (torn by a crash?): trying an older one", path)
    if on_disk:
        raise UserError(f"no checkpoint in {run_dir} reads completely (see the warnings "
                        "above): move them aside to start over, or use a new --run-name")
    return None


def _step(prefix):
    tail = prefix.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1
