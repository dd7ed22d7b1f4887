"""Data preparation: folder set-up and the embedded demo benchmark."""
