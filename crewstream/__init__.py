"""crewstream: the command line (`crewstream.cli`), the sample generator and the demo."""
