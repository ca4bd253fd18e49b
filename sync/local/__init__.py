"""Local runners: the in-process Durable runner, one cycle from the command line, the local webhook host."""
