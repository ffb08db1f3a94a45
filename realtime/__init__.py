"""emotrack streaming pipeline: capture, segmentation, transcription, context, inference, sinks."""
