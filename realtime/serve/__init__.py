"""Many sessions at once: ``emotrack serve`` over MQTT (stream protocol 1, docs/PROTOCOL.md).

``protocol`` (topics, messages, chunks), ``source`` (a session's audio as a pipeline source),
``batcher`` and ``models`` (one Whisper and one UniMSE per process, batched across sessions),
``session`` (one session's pipeline), ``server`` (the MQTT side), ``client`` and ``audio_input``
(``emotrack stream``), ``cli`` (both commands).
"""
