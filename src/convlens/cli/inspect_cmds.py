"""Inside-view commands: explain, convolve, features."""
