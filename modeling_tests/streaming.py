"""A streamer that records what `generate()` sends it, shared by the streaming tests."""


class RecordingStreamer:
    """Keeps every `put` value as a 1-D tensor: the prompt first, then the answer tokens as they become final."""

    def __init__(self):
        self.values = []

    def put(self, value):
        self.values.append(value.reshape(-1))

    def end(self):
        pass
