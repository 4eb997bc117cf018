"""The media pipeline: memorial slideshow videos from photos (and a song), rendered in cancellable stages.

Kinds: `canvas` (a photo to a clip), `transition` (between two clips), `last_clip` (the closing card),
`render` (clips joined, music mixed, MP4 and poster) and `pipeline` (a project's whole run: fans out the
others and waits for them). Routes: `/api/v1/projects` (projects, assets, run, cancel, video, poster).
"""
