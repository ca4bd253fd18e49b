"""Administration over the core and the ports: mailbox lifecycle, filters, diagnose, status."""
