"""Examples a newcomer runs; :mod:`examples.window` is the post-office clerk's web app."""
