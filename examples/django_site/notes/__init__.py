"""Notes and the counter of notes posted: the sample site's one app."""
