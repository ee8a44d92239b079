"""What each `modelguard` command does, one module per command; cli.py parses their arguments."""
