"""Datasets: what a record holds and how photos become records and records become batches.

records   the record schema: the feature keys, written and parsed by the same constants
photos    decoding and checking the image files the converters read
shards    the converters' shared shard writer (atomic, resumable, parallel) and its stats
pipeline  the tf.data input pipeline: decode, crop / mirror-pad to the U-Net's geometry, batch
augment   the paper's augmentation of training windows
guard     corrupt records: found before training, skipped or reported
"""
