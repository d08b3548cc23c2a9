"""Data: datasets and LightningDataModules. Knows no model.

Batch contract (what every DataModule's loaders yield, a dict):

Audio (``data=synthetic_speech|librispeech|audio_folder``):
    x        float32 (B, 1, L)   waveform windows at ``sample_rate``; L = ``window``
    mask     bool    (B, L)      True on real samples, False on padding
    speaker  int64   (B,)        speaker index into ``datamodule.speakers`` (-100 if unknown)
    phones   int64   (B, L//160) frame (10 ms) labels aligned to the window, -100 where unknown
    label    int64   (B,)        utterance class index into ``datamodule.classes`` (-100 if none)
    index    int64   (B,)        utterance index in the split

Images (``data=imagenet_patches|cifar10_patches``):
    x        float32 (B, G, G, C, P, P)  grid of overlapping patches
    label    int64   (B,)                 class index
    index    int64   (B,)
"""
