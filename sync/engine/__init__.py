"""The engine: collect (read -> route -> persist) and the mailbox executor, over the ports."""
